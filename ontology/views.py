"""The vocabulary and the shapes at stable URLs (public: they describe the form, not anyone's data)."""

from pathlib import Path

from django.http import Http404, HttpResponse

from ontology.namespaces import VOCABULARY_VERSION

HERE = Path(__file__).parent
VOCABULARIES = {VOCABULARY_VERSION: HERE / "vocabulary" / f"gridtwin-{VOCABULARY_VERSION}.ttl"}
SHAPES = HERE / "shapes" / "gridtwin-shapes.ttl"


def vocabulary(request, version: str = VOCABULARY_VERSION) -> HttpResponse:
    """The gridtwin vocabulary as Turtle; without a version, the current one."""
    path = VOCABULARIES.get(version)
    if path is None:
        raise Http404("no such vocabulary version")
    return HttpResponse(path.read_bytes(), content_type="text/turtle; charset=utf-8")


def shapes(request) -> HttpResponse:
    """The SHACL shapes every upload is judged by."""
    return HttpResponse(SHAPES.read_bytes(), content_type="text/turtle; charset=utf-8")
