"""Errors of the semantic layer, each carrying a machine-readable reason and the offending place."""


class OntologyError(ValueError):
    """Base of every error a client caused; `reason` is a stable machine-readable code."""

    reason = "invalid_rdf"
    status = 400

    def __init__(self, message: str, *, node: str | None = None, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.node = node
        self.line = line

    def as_dict(self) -> dict:
        detail = {"reason": self.reason, "message": self.message}
        if self.node is not None:
            detail["node"] = self.node
        if self.line is not None:
            detail["line"] = self.line
        return detail


class UnsupportedFormat(OntologyError):
    reason = "unsupported_media_type"
    status = 415


class EmptyUpload(OntologyError):
    reason = "empty_body"


class UploadTooLarge(OntologyError):
    reason = "too_large"
    status = 413


class ForbiddenConstruct(OntologyError):
    """A construct refused for safety (DOCTYPE, remote JSON-LD context, giant literal, …)."""

    reason = "forbidden_construct"


class RdfSyntaxError(OntologyError):
    reason = "syntax_error"


class ConversionError(OntologyError):
    """A source model (pandapower net, SimBench code, CGMES files) cannot be converted."""

    reason = "conversion_error"
    status = 422


class NestingTooDeep(OntologyError):
    """The body nests deeper than `GRIDTWIN_MAX_RDF_DEPTH` (refused before any parser runs: see ontology.limits)."""

    reason = "too_deep"


class TooManyTriples(OntologyError):
    """The body holds more than `GRIDTWIN_MAX_UPLOAD_TRIPLES` triples (parsing stops at the first one over)."""

    reason = "too_many_triples"
    status = 413


class ParseTimeExceeded(OntologyError):
    """Parsing the body took longer than `GRIDTWIN_RDF_PARSE_SECONDS`."""

    reason = "parse_time_exceeded"
    status = 413
