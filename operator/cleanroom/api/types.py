"""Typed views of the Dataset, Workspace and ExportRequest custom resources (group cleanroom.dev, version v1alpha1).

The CRDs in ``crds/`` are the contract; these types mirror them field for field, which a unit test
checks. Defaults here equal the CRD defaults so that code built from a dict without API-server
defaulting (the CLI, unit tests) behaves the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

GROUP = "cleanroom.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
DATASETS = "datasets"
WORKSPACES = "workspaces"
EXPORT_REQUESTS = "exportrequests"


class DeidentificationMethod(StrEnum):
    PSEUDONYMIZE = "Pseudonymize"
    ANONYMIZE = "Anonymize"


class DeidentificationOption(StrEnum):
    """The ten options of DICOM PS3.15 Annex E (Table E.1-1 columns)."""

    RETAIN_SAFE_PRIVATE = "RetainSafePrivate"
    RETAIN_UIDS = "RetainUIDs"
    RETAIN_DEVICE_IDENTITY = "RetainDeviceIdentity"
    RETAIN_INSTITUTION_IDENTITY = "RetainInstitutionIdentity"
    RETAIN_PATIENT_CHARACTERISTICS = "RetainPatientCharacteristics"
    RETAIN_LONGITUDINAL_FULL_DATES = "RetainLongitudinalTemporalInformationFullDates"
    RETAIN_LONGITUDINAL_MODIFIED_DATES = "RetainLongitudinalTemporalInformationModifiedDates"
    CLEAN_DESCRIPTORS = "CleanDescriptors"
    CLEAN_STRUCTURED_CONTENT = "CleanStructuredContent"
    CLEAN_GRAPHICS = "CleanGraphics"


class BurnedInAnnotationPolicy(StrEnum):
    QUARANTINE = "Quarantine"
    ALLOW = "Allow"


@dataclass(frozen=True)
class ObjectRef:
    """A reference to a namespaced object, e.g. a Secret."""

    namespace: str
    name: str


@dataclass(frozen=True)
class SecretKeyRef:
    """A reference to one data key of a Secret."""

    namespace: str
    name: str
    key: str = "key"


@dataclass(frozen=True)
class PseudonymTableRef:
    """A Secret key holding a CSV of original patient ID to pseudonym."""

    namespace: str
    name: str
    key: str = "table.csv"


@dataclass(frozen=True)
class S3Source:
    endpoint: str
    bucket: str
    region: str = ""
    prefix: str = ""
    credentials_secret_ref: ObjectRef | None = None


@dataclass(frozen=True)
class DicomWebSource:
    url: str
    study_instance_uids: tuple[str, ...] = field(default=(), metadata={"json": "studyInstanceUIDs"})
    credentials_secret_ref: ObjectRef | None = None


@dataclass(frozen=True)
class DirectorySource:
    path: str


@dataclass(frozen=True)
class DatasetSource:
    name: str
    snapshot: str = ""


@dataclass(frozen=True)
class Source:
    """Exactly one member is set (enforced by a CEL rule on the CRD)."""

    s3: S3Source | None = None
    dicomweb: DicomWebSource | None = None
    directory: DirectorySource | None = None
    dataset: DatasetSource | None = None

    @property
    def kind(self) -> str:
        for name in ("s3", "dicomweb", "directory", "dataset"):
            if getattr(self, name) is not None:
                return name
        raise ValueError("source: set exactly one of s3, dicomweb, directory or dataset")


@dataclass(frozen=True)
class Deidentification:
    method: DeidentificationMethod
    key_secret_ref: SecretKeyRef | None = None
    pseudonym_table_secret_ref: PseudonymTableRef | None = None
    options: tuple[DeidentificationOption, ...] = ()
    burned_in_annotations: BurnedInAnnotationPolicy = BurnedInAnnotationPolicy.QUARANTINE


class LabelSelectorOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


@dataclass(frozen=True)
class LabelSelectorRequirement:
    key: str
    operator: LabelSelectorOperator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator is LabelSelectorOperator.EXISTS:
            return self.key in labels
        if self.operator is LabelSelectorOperator.DOES_NOT_EXIST:
            return self.key not in labels
        found = self.key in labels and labels[self.key] in self.values
        return found if self.operator is LabelSelectorOperator.IN else not found


@dataclass(frozen=True)
class LabelSelector:
    """A Kubernetes label selector (metav1.LabelSelector): every matchLabels pair and every expression."""

    match_labels: Mapping[str, str] = field(default_factory=dict)
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels.items()) and all(
            e.matches(labels) for e in self.match_expressions
        )


@dataclass(frozen=True)
class NamespaceSelection:
    """The namespaces (projects) that may hold Workspaces over a Dataset: listed by name or chosen by labels.
    Neither set admits none."""

    names: tuple[str, ...] = ()
    selector: LabelSelector | None = None

    def admits(self, namespace: str, labels: Mapping[str, str]) -> bool:
        return namespace in self.names or (self.selector is not None and self.selector.matches(labels))


@dataclass(frozen=True)
class Access:
    groups: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    admin_groups: tuple[str, ...] = ()
    namespaces: NamespaceSelection = NamespaceSelection()

    def allows(self, user: str, user_groups: tuple[str, ...] = ()) -> bool:
        """Whether a user, with the groups their identity provider asserts, may use the Dataset."""
        return user in self.users or any(group in self.groups for group in user_groups)

    def administers(self, user_groups: tuple[str, ...]) -> bool:
        """Whether a user with these groups holds the Dataset's admin role (may create and change its
        Workspaces for its users without being one)."""
        return any(group in self.admin_groups for group in user_groups)


@dataclass(frozen=True)
class Retention:
    keep_snapshots: int = 3


class ExportFileType(StrEnum):
    """What a file is, judged by its content (airlock.filetypes); DICOM is never exportable."""

    TEXT = "Text"
    CSV = "CSV"
    JSON = "JSON"
    PNG = "PNG"
    JPEG = "JPEG"
    PDF = "PDF"
    NUMPY = "NumPy"
    NIFTI = "NIfTI"
    SAFETENSORS = "SafeTensors"
    PYTORCH = "PyTorch"


DEFAULT_EXPORT_TYPES = tuple(
    ExportFileType(t) for t in ("Text", "CSV", "JSON", "PNG", "PDF", "NumPy", "SafeTensors", "PyTorch")
)


@dataclass(frozen=True)
class ExportPolicy:
    """What may leave a Workspace over the Dataset, and whose approval it needs besides a security officer's."""

    steward_group: str = ""
    max_bytes: int = 100 * 1024 * 1024
    allowed_types: tuple[ExportFileType, ...] = DEFAULT_EXPORT_TYPES


@dataclass(frozen=True)
class DatasetSpec:
    source: Source
    deidentification: Deidentification
    description: str = ""
    access: Access = Access()
    retention: Retention = Retention()
    export: ExportPolicy = ExportPolicy()


@dataclass(frozen=True)
class WorkspaceDatasetRef:
    name: str
    snapshot: str = ""


@dataclass(frozen=True)
class WorkspaceResources:
    gpu: int = 0
    gpu_type: str = ""
    cpu: str = "2"
    memory: str = "8Gi"
    home_storage: str = "10Gi"


@dataclass(frozen=True)
class Lifetime:
    expires_after: str = "168h"
    idle_timeout: str = "2h"


@dataclass(frozen=True)
class WorkspaceSpec:
    dataset: WorkspaceDatasetRef
    users: tuple[str, ...]
    purpose: str
    image: str
    resources: WorkspaceResources = WorkspaceResources()
    lifetime: Lifetime = Lifetime()
    running: bool = True


class ExportRole(StrEnum):
    DATA_STEWARD = "DataSteward"
    SECURITY_OFFICER = "SecurityOfficer"


class ExportVerdict(StrEnum):
    APPROVE = "Approve"
    REJECT = "Reject"


@dataclass(frozen=True)
class ExportDecision:
    """One approver's decision; ``by`` and ``groups`` are held to the authenticated user by admission."""

    by: str
    role: ExportRole
    verdict: ExportVerdict
    reason: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExportRequestSpec:
    workspace: str
    files: tuple[str, ...]
    justification: str
    decisions: tuple[ExportDecision, ...] = ()
