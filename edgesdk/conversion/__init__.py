"""`edgesdk.convert`'s stages, one module each (see edgesdk/convert.py for the order and what each
does): context (what every stage reads, and the timed records the report replays), prepare, data,
compress, build (with candidates), choose, write (with manifest and markdown)."""
from .context import STAGES, Context, StageRecord

__all__ = ["STAGES", "Context", "StageRecord"]
