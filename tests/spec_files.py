"""The official 3GPP OpenAPI files the tests validate against, and a JSON-schema checker over them.

The files are the repository's own unmodified copy in ``specs/3gpp`` (its SOURCE.md says where
they come from and how to refresh them), so they are part of every clone: a missing file is an
error, never a reason to skip a conformance test.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jsonschema import Draft7Validator

SPEC_DIR = Path(__file__).resolve().parents[1] / "specs" / "3gpp"

NFM = "TS29510_Nnrf_NFManagement.yaml"
DISC = "TS29510_Nnrf_NFDiscovery.yaml"
TOKEN = "TS29510_Nnrf_AccessToken.yaml"
COMMON = "TS29571_CommonData.yaml"

# What the tests validate against, then the files those four $ref (transitively) that the source
# set has; tests/test_spec_files.py checks this list against the folder and the refs.
VENDORED = (NFM, DISC, TOKEN, COMMON,
            "TS29503_Nudm_SDM.yaml", "TS29503_Nudm_UECM.yaml", "TS29518_Namf_Communication.yaml")

# Files a vendored schema $refs that the source set does not have (see SOURCE.md): a validation
# that reaches one of these components fails as unresolvable rather than passing unchecked.
NOT_VENDORED = frozenset({
    "TS29514_Npcf_PolicyAuthorization.yaml", "TS29517_Naf_EventExposure.yaml",
    "TS29520_Nnwdaf_AnalyticsInfo.yaml", "TS29520_Nnwdaf_EventsSubscription.yaml",
    "TS29572_Nlmf_Location.yaml",
})


def spec_path(name: str) -> Path:
    """The path of one vendored 3GPP file; FileNotFoundError when the copy lacks it."""
    path = SPEC_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the 3GPP files the tests use are part of the "
                                "repository (specs/3gpp/SOURCE.md); restore it, do not skip")
    return path


@functools.cache
def load_spec(name: str) -> dict:
    """One vendored OpenAPI file, parsed (cached: the big ones take a while)."""
    import yaml

    with open(spec_path(name), encoding="utf-8") as fh:
        return yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


class SchemaChecker:
    """Validates JSON against components of the vendored OpenAPI files, cross-file $refs
    resolved through a ``referencing`` registry of every vendored file."""

    BASE = "https://3gpp.invalid/"

    def __init__(self) -> None:
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT7

        self.registry = Registry().with_resources(
            (self.BASE + name, Resource.from_contents(load_spec(name), default_specification=DRAFT7))
            for name in VENDORED)

    @functools.lru_cache(maxsize=64)  # noqa: B019 (one checker per session)
    def validator(self, file: str, component: str) -> Draft7Validator:
        """A validator of one component (cached)."""
        from jsonschema import Draft7Validator

        schema = {"$ref": f"{self.BASE}{file}#/components/schemas/{component}"}
        return Draft7Validator(schema, registry=self.registry)

    def errors(self, obj: object, file: str, component: str) -> list:
        """The validation errors (jsonschema ``ValidationError``), sorted."""
        return sorted(self.validator(file, component).iter_errors(obj), key=str)

    def check(self, obj: object, file: str, component: str) -> None:
        """Assert that ``obj`` is a valid ``component`` of ``file``."""
        errors = self.errors(obj, file, component)
        assert not errors, f"{component} does not validate: {errors[0].message} at {list(errors[0].absolute_path)}"

    def document(self, file: str) -> dict:
        """One of the OpenAPI files, as loaded."""
        return self.registry[self.BASE + file].contents


@functools.lru_cache(maxsize=1)
def schema_checker() -> SchemaChecker:
    """The one checker of a test session (building the registry parses ~770 kB of YAML)."""
    return SchemaChecker()
