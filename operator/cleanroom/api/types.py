"""Typed views of the Dataset and Workspace custom resources (group cleanroom.dev, version v1alpha1).

The CRDs in ``crds/`` are the contract; these types mirror them field for field, which a unit test
checks. Defaults here equal the CRD defaults so that code built from a dict without API-server
defaulting (the CLI, unit tests) behaves the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

GROUP = "cleanroom.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
DATASETS = "datasets"
WORKSPACES = "workspaces"


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


@dataclass(frozen=True)
class Access:
    groups: tuple[str, ...] = ()
    users: tuple[str, ...] = ()

    def allows(self, user: str, user_groups: tuple[str, ...] = ()) -> bool:
        """Whether a user, with the groups their identity provider asserts, may use the Dataset."""
        return user in self.users or any(group in self.groups for group in user_groups)


@dataclass(frozen=True)
class Retention:
    keep_snapshots: int = 3


@dataclass(frozen=True)
class DatasetSpec:
    source: Source
    deidentification: Deidentification
    description: str = ""
    access: Access = Access()
    retention: Retention = Retention()


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
