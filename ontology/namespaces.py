"""The vocabularies gridtwin speaks: public ones first, our own namespace only for the gaps."""

from rdflib import Namespace
from rdflib.namespace import DCAT, DCTERMS, OWL, RDF, RDFS, SH, SKOS, XSD

CIM = Namespace("http://iec.ch/TC57/CIM100#")
CIM16 = Namespace("http://iec.ch/TC57/2013/CIM-schema-cim16#")
GT = Namespace("https://w3id.org/gridtwin/ontology#")
SAREF = Namespace("https://saref.etsi.org/core/")
S4ENER = Namespace("https://saref.etsi.org/saref4ener/")
QUDT = Namespace("http://qudt.org/schema/qudt/")
UNIT = Namespace("http://qudt.org/vocab/unit/")
ORG = Namespace("http://www.w3.org/ns/org#")
GEO = Namespace("http://www.w3.org/2003/01/geo/wgs84_pos#")

PREFIXES = {
    "cim": CIM,
    "gt": GT,
    "saref": SAREF,
    "s4ener": S4ENER,
    "qudt": QUDT,
    "unit": UNIT,
    "org": ORG,
    "geo": GEO,
    "dcat": DCAT,
    "dcterms": DCTERMS,
    "owl": OWL,
    "rdf": RDF,
    "rdfs": RDFS,
    "sh": SH,
    "skos": SKOS,
    "xsd": XSD,
}

VOCABULARY_VERSION = "1.0.0"
