"""OmniGen2's 3-axis rotary position embedding: position ids of a packed sequence and their complex rotations.

Axis 0 is the "which item" axis (text token index; one constant per image), axes 1 and 2 are patch row and column.
Text tokens get (i, i, i); reference image k gets (shift_k, row, col) where shift_0 is the caption length and each
image advances the shift by max(rows, cols); the target image comes last with the shift after all references.
Rotations are complex numbers in float64 tables (diffusers' `get_1d_rotary_pos_embed`, as the published model
builds them) and are applied to interleaved (real, imaginary) pairs of each head dimension.
"""

from __future__ import annotations

import torch
from diffusers.models.embeddings import get_1d_rotary_pos_embed

from omnideft.errors import UserError

ROPE_THETA = 10000


def rotary_tables(axes_dim: tuple[int, ...], axes_lens: tuple[int, ...], theta: int = ROPE_THETA) -> list[torch.Tensor]:
    """One complex128 table [axis_len, axis_dim // 2] per axis."""
    return [get_1d_rotary_pos_embed(d, n, theta=theta, freqs_dtype=torch.float64) for d, n in zip(axes_dim, axes_lens)]


def check_positions(highest: int, axes_lens) -> None:
    """One line (not an IndexError deep in the attention) when a sequence needs a position beyond the model's RoPE
    table: a prompt too long for it, or too many / too large images."""
    if highest >= min(axes_lens):
        raise UserError(f"the prompt and its images need {highest + 1} positions; this model's position table has "
                        f"{min(axes_lens)} (axes_lens): shorten the prompt or use fewer or smaller images")


def grid_ids(first: int, rows: int, cols: int) -> torch.Tensor:
    """[rows * cols, 3] ids of one image's patches in row-major order, axis 0 fixed at `first`."""
    r = torch.arange(rows).repeat_interleave(cols)
    c = torch.arange(cols).repeat(rows)
    return torch.stack([torch.full_like(r, first), r, c], dim=-1)


def sample_position_ids(caption_len: int, ref_grids: list[tuple[int, int]], grid: tuple[int, int]) -> torch.Tensor:
    """[caption + references + target tokens, 3] position ids of one sample's packed sequence; grids in patches."""
    parts = [torch.arange(caption_len)[:, None].expand(caption_len, 3)]
    shift = caption_len
    for rows, cols in ref_grids:
        parts.append(grid_ids(shift, rows, cols))
        shift += max(rows, cols)
    parts.append(grid_ids(shift, *grid))
    return torch.cat(parts)


def rotations(tables: list[torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
    """Complex rotations [..., sum(axes_dim) // 2] for integer ids [..., 3]: each axis's table row, concatenated."""
    return torch.cat([table.to(ids.device)[ids[..., axis]] for axis, table in enumerate(tables)], dim=-1)


def apply_rotary(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, S, H, D] by rot [B, S, D // 2] (complex), pairing dimensions (0,1), (2,3), ..."""
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], x.shape[-1] // 2, 2))
    return torch.view_as_real(pairs * rot.unsqueeze(2)).flatten(3).type_as(x)
