"""The CustomResourceDefinitions of Dataset, Workspace and ExportRequest, built from the API types.

The types in ``api.types`` (specs) and ``api.status`` carry every description, limit, CEL rule and default;
this module adds what belongs to a resource as a whole (names, scope, printer columns, rules on the object)
and builds the CRD manifests. ``python -m cleanroom.api.crdgen`` writes them to ``crds/`` and to the chart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from cleanroom.api._schema import Rule, object_schema
from cleanroom.api.contract import APPROVED, CHECKED, READY, RELEASED
from cleanroom.api.status import DatasetStatus, ExportRequestStatus, WorkspaceStatus
from cleanroom.api.types import (
    DATASETS,
    EXPORT_REQUESTS,
    GROUP,
    VERSION,
    WORKSPACES,
    DatasetSpec,
    ExportRequestSpec,
    WorkspaceSpec,
)

# Where `kubectl get crd -o yaml` readers find the manual of the API.
API_DOC_ANNOTATION = "cleanroom.dev/api-doc"
API_DOC = "docs/api.md"
STATUS_DESCRIPTION = "Observed state, written by the operator only."


@dataclass(frozen=True)
class PrinterColumn:
    """A column of ``kubectl get``."""

    name: str
    type: Literal["string", "integer", "date", "boolean", "number"]
    json_path: str
    description: str = ""
    # 1: shown only by `kubectl get -o wide`.
    priority: int = 0


def _condition_column(condition: str) -> PrinterColumn:
    return PrinterColumn(condition, "string", f'.status.conditions[?(@.type=="{condition}")].status')


_AGE = PrinterColumn("Age", "date", ".metadata.creationTimestamp")
_PHASE = PrinterColumn("Phase", "string", ".status.phase")


@dataclass(frozen=True)
class CustomResource:
    """One kind of cleanroom's API, as its CRD declares it."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    scope: Literal["Cluster", "Namespaced"]
    description: str
    spec: type[Any]
    spec_description: str
    status: type[Any]
    printer_columns: tuple[PrinterColumn, ...]
    # Rules on the whole object (they may read metadata).
    validations: tuple[Rule, ...] = ()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"

    @property
    def filename(self) -> str:
        return f"{GROUP}_{self.plural}.yaml"


DATASET = CustomResource(
    kind="Dataset",
    plural=DATASETS,
    short_names=("dset",),
    scope="Cluster",
    description=(
        "A Dataset is a collection of raw DICOM studies that the operator de-identifies (DICOM PS3.15 Annex E) "
        "and publishes as an immutable, content-addressed snapshot in object storage. Workspaces mount one of "
        "its snapshots read-only."
    ),
    spec=DatasetSpec,
    spec_description=(
        "What to ingest, how to de-identify it, who may analyse it and how many snapshots to keep."
    ),
    status=DatasetStatus,
    printer_columns=(
        _condition_column(READY),
        _PHASE,
        PrinterColumn(
            "Snapshot",
            "string",
            ".status.snapshot.shortDigest",
            "First 12 hex digits of the published snapshot's sha256 digest.",
        ),
        PrinterColumn("Files", "integer", ".status.snapshot.files"),
        PrinterColumn("Quarantined", "integer", ".status.quarantine.files"),
        PrinterColumn("Shards-Done", "integer", ".status.progress.shardsDone", priority=1),
        PrinterColumn("Shards", "integer", ".status.progress.shardsTotal", priority=1),
        _AGE,
    ),
)

WORKSPACE = CustomResource(
    kind="Workspace",
    plural=WORKSPACES,
    short_names=("ws",),
    scope="Namespaced",
    description=(
        "A Workspace is a group of users' JupyterLab session over one Dataset snapshot, mounted read-only, "
        "with egress blocked (only the hub's API is reachable), hardened pods, GPU scheduling, an expiry and "
        "idle culling."
    ),
    spec=WorkspaceSpec,
    spec_description="The dataset snapshot, the users, the purpose and the compute a Workspace gets.",
    status=WorkspaceStatus,
    printer_columns=(
        _condition_column(READY),
        _PHASE,
        PrinterColumn("Dataset", "string", ".spec.dataset.name"),
        PrinterColumn(
            "Snapshot",
            "string",
            ".status.snapshot.shortDigest",
            "First 12 hex digits of the pinned snapshot digest.",
        ),
        PrinterColumn("GPU", "integer", ".spec.resources.gpu"),
        PrinterColumn("Users", "string", ".spec.users"),
        _AGE,
    ),
    validations=(
        # The name becomes a label value (at most 63 characters) and part of a Service name (no dots).
        Rule(
            "size(self.metadata.name) <= 63 && !self.metadata.name.contains('.')",
            "metadata.name must be at most 63 characters and hold no dots, since it names the workspace's "
            "Service and labels: use lower-case letters, digits and hyphens, e.g. team-alice rather than "
            "team.alice",
        ),
    ),
)

EXPORT_REQUEST = CustomResource(
    kind="ExportRequest",
    plural=EXPORT_REQUESTS,
    short_names=("xr",),
    scope="Namespaced",
    description=(
        "An ExportRequest asks for files from a Workspace's home folder to leave the cleanroom (the airlock). "
        "The operator copies them into a quarantine area of the object store, runs the automated disclosure "
        "checks (no DICOM, nothing that matches the Workspace's snapshot, no pseudonym or UID of it, the "
        "Dataset's export policy), and releases them to the requester only after two different people, "
        "neither of them the requester, approved: a data steward of the Dataset and a security officer. A "
        "rejection, a failed check or the expiry deletes the copies. Every step is audited. Modellers create "
        "one from the notebook (`cleanroom export`), through the hub; approvers add a decision with kubectl "
        "(`cleanroom export decide`)."
    ),
    spec=ExportRequestSpec,
    spec_description=(
        "What is asked to leave and why (fixed once created), and the approvers' decisions (added one at a "
        "time, never changed or removed)."
    ),
    status=ExportRequestStatus,
    printer_columns=(
        _PHASE,
        PrinterColumn("Workspace", "string", ".spec.workspace"),
        PrinterColumn("Requested-By", "string", ".status.requestedBy"),
        _condition_column(CHECKED),
        _condition_column(APPROVED),
        _condition_column(RELEASED),
        _AGE,
    ),
)

RESOURCES = (DATASET, WORKSPACE, EXPORT_REQUEST)


def custom_resource_definition(resource: CustomResource) -> dict[str, Any]:
    """The CRD manifest of ``resource``, as ``kubectl apply`` takes it."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": resource.crd_name, "annotations": {API_DOC_ANNOTATION: API_DOC}},
        "spec": {
            "group": GROUP,
            "scope": resource.scope,
            "names": {
                "kind": resource.kind,
                "listKind": f"{resource.kind}List",
                "plural": resource.plural,
                "singular": resource.kind.lower(),
                "shortNames": list(resource.short_names),
                "categories": ["cleanroom"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [_column(c) for c in resource.printer_columns],
                    "schema": {"openAPIV3Schema": _root_schema(resource)},
                }
            ],
        },
    }


def _column(column: PrinterColumn) -> dict[str, Any]:
    out: dict[str, Any] = {"name": column.name, "type": column.type}
    if column.description:
        out["description"] = column.description
    out["jsonPath"] = column.json_path
    if column.priority:
        out["priority"] = column.priority
    return out


def _root_schema(resource: CustomResource) -> dict[str, Any]:
    spec = _described(object_schema(resource.spec), resource.spec_description)
    status = _described(object_schema(resource.status), STATUS_DESCRIPTION)
    root: dict[str, Any] = {"type": "object", "description": resource.description, "required": ["spec"]}
    if resource.validations:
        root["x-kubernetes-validations"] = [
            {"rule": rule.rule, "message": rule.message} for rule in resource.validations
        ]
    root["properties"] = {
        "apiVersion": {
            "type": "string",
            "description": f"Versioned schema of this object; always {GROUP}/{VERSION}.",
        },
        "kind": {"type": "string", "description": f"Always {resource.kind}."},
        "metadata": {"type": "object"},
        "spec": spec,
        "status": status,
    }
    return root


def _described(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"type": schema.pop("type"), "description": description, **schema}
