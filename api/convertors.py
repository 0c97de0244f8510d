"""The path convertor of references, `{reference_id:reference}` in every route that takes one.

A reference may contain "/" (engine.references), so the convertor takes the rest of the path,
slashes included; a route with a suffix (`.../release`) matches it after the reference. What is
not a reference is refused by the engine with a 400 that states the grammar, not a bare 404.
"""

from __future__ import annotations

from starlette.convertors import Convertor, register_url_convertor


class ReferenceConvertor(Convertor[str]):
    regex = ".+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("reference", ReferenceConvertor())
