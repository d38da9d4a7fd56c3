"""What every family shares about prompts: the `<img><|image_k|></img>` placeholder check and in-context instructions
(example pairs, then the query). A family's own prompt encoding lives in its folder (OmniGen (v1):
families/omnigen/processor.py and collate.py)."""

from omnideft.prompts.in_context import compose_in_context, example_clause
from omnideft.prompts.tags import check_tags

__all__ = ["check_tags", "compose_in_context", "example_clause"]
