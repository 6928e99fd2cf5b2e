"""Generators of the corpus cases too large to keep as files (tests/hostile/MANIFEST.toml names each with its arguments).

Each takes its keyword arguments from the manifest and returns the body as bytes. They are deterministic: the same
manifest gives the same bytes, so the corpus is versioned by the manifest and these functions together.
"""

from __future__ import annotations

import json

RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
XML_HEAD = f'<rdf:RDF xmlns:rdf="{RDF_NS}" xmlns:e="urn:e#">'
CGMES_HEAD = (f'<?xml version="1.0" encoding="UTF-8"?>\n<rdf:RDF xmlns:rdf="{RDF_NS}" xmlns:cim="http://iec.ch/TC57/CIM100#" '
              'xmlns:md="http://iec.ch/TC57/61970-552/ModelDescription/1#">\n')


def deep_jsonld_objects(*, depth: int) -> bytes:
    return ('{"@id": "urn:a", "urn:p": ' * depth + '"x"' + "}" * depth).encode()


def deep_jsonld_lists(*, depth: int) -> bytes:
    return ('{"@id": "urn:a", "urn:p": ' + '{"@list": [' * depth + '"x"' + "]}" * depth + "}").encode()


def deep_turtle_blank_nodes(*, depth: int) -> bytes:
    return ("<urn:a> <urn:p> " + "[ <urn:p> " * depth + '"x"' + " ]" * depth + " .").encode()


def deep_turtle_collections(*, depth: int) -> bytes:
    return ("<urn:a> <urn:p> " + "( " * depth + '"x"' + " )" * depth + " .").encode()


def deep_ntriples_triple_terms(*, depth: int) -> bytes:
    return ("<urn:a> <urn:p> " + "<<( <urn:a> <urn:p> " * depth + '"x"' + " )>>" * depth + " .").encode()


def deep_rdfxml(*, depth: int) -> bytes:
    return (XML_HEAD + "<e:T><e:p>" * depth + "<e:T/>" + "</e:p></e:T>" * depth + "</rdf:RDF>").encode()


def deep_cgmes(*, depth: int) -> bytes:
    """A CGMES-looking equipment file whose one ConnectivityNode nests `depth` property elements deep."""
    inner = '<cim:ConnectivityNode rdf:ID="_n"><cim:IdentifiedObject.name>n</cim:IdentifiedObject.name></cim:ConnectivityNode>'
    return (CGMES_HEAD + "<cim:Terminal><cim:Terminal.ConnectivityNode>" * depth + inner
            + "</cim:Terminal.ConnectivityNode></cim:Terminal>" * depth + "</rdf:RDF>").encode()


def deep_json(*, depth: int, key: str = "a") -> bytes:
    """A JSON object nested `depth` deep (a body of any JSON endpoint)."""
    return (f'{{"{key}": ' * depth + "1" + "}" * depth).encode()


def deep_json_arrays(*, depth: int) -> bytes:
    return ('{"readings": ' + "[" * depth + "]" * depth + "}").encode()


def huge_turtle_literal(*, chars: int) -> bytes:
    return ('<urn:a> <http://iec.ch/TC57/CIM100#IdentifiedObject.name> "' + "x" * chars + '" .').encode()


def huge_jsonld_literal(*, chars: int) -> bytes:
    return json.dumps({"@id": "urn:a", "http://iec.ch/TC57/CIM100#IdentifiedObject.name": "x" * chars}).encode()


def huge_rdfxml_literal(*, chars: int) -> bytes:
    return (XML_HEAD + '<rdf:Description rdf:about="urn:a"><e:name>' + "x" * chars + "</e:name></rdf:Description></rdf:RDF>").encode()


def huge_turtle_list(*, items: int) -> bytes:
    return ("<urn:a> <urn:p> (" + ' "x"' * items + " ) .").encode()


def huge_ntriples(*, triples: int) -> bytes:
    return b"".join(b'<urn:a%d> <urn:p> "x" .\n' % i for i in range(triples))


def huge_csv_field(*, chars: int) -> bytes:
    """One CSV reading whose quality field is `chars` long (Python's csv refuses fields over 131,072 characters)."""
    return ("point,quantity,ts,value,unit,quality\n1,active_power,2024-05-01T12:00:00Z,1.5,kW," + "g" * chars + "\n").encode()


def huge_csv_row(*, columns: int) -> bytes:
    """A valid reading of @P0@, then a row of @P1@ with `columns` columns more than the header's."""
    return ("point,quantity,ts,value,unit\n@P0@,active_power,2024-05-01T12:00:00Z,1.5,kW\n"
            "@P1@,active_power,2024-05-01T12:00:00Z,1.5,kW" + ",x" * columns + "\n").encode()


def long_json_string(*, template: str, chars: int, fill: str = "x") -> bytes:
    """`template` (JSON text) with `@LONG@` replaced by `chars` copies of `fill`."""
    return template.replace("@LONG@", fill * chars).encode()


def json_many_keys(*, keys: int) -> bytes:
    """A flat JSON object with `keys` distinct keys (a hash-flooding / huge-object probe, under 1 MB)."""
    return json.dumps({f"k{i}": i for i in range(keys)}).encode()


def sparql_deep_groups(*, depth: int) -> bytes:
    return ("SELECT * WHERE " + "{ " * depth + "?s ?p ?o " + "} " * depth).encode()


def sparql_long_query(*, chars: int) -> bytes:
    return ("SELECT * WHERE { ?s ?p ?o } #" + "x" * chars).encode()


def senml_many_records(*, records: int) -> bytes:
    """A SenML pack whose records each only repeat a base name (no value): every one is a reading without a value."""
    return json.dumps([{"bn": f"{i}/"} for i in range(records)]).encode()


def cgmes_sample_profile(profile: str, sample: str = "CIGRE_MV") -> bytes:
    """One profile file (EQ, TP, SV, DI) of a CGMES sample that cimpy ships."""
    from pathlib import Path

    import cimpy

    folder = Path(cimpy.__file__).parent / "examples" / "sampledata" / sample
    return next(folder.glob(f"*_{profile}.xml")).read_bytes()


def cgmes_sample_edit(*, profile: str, old: str, new: str, chars: int = 0) -> bytes:
    """A sample profile with the first `old` replaced by `new` (`@LONG@` in it: `chars` copies of "n")."""
    data = cgmes_sample_profile(profile)
    assert old.encode() in data, old
    return data.replace(old.encode(), new.replace("@LONG@", "n" * chars).encode(), 1)


def odrl_edit(*, base: str, old: str, new: str, chars: int = 0) -> bytes:
    """The control policy cases/odrl-base.<base> with every `old` replaced by `new` (`@LONG@` in it: `chars` copies of "x")."""
    from pathlib import Path

    data = (Path(__file__).parent / "cases" / f"odrl-base.{base}").read_text()
    assert old in data, old
    return data.replace(old, new.replace("@LONG@", "x" * chars)).encode()
