"""Typed views of the Dataset, Workspace and ExportRequest custom resources (group cleanroom.dev, version v1alpha1).

These types are the API's one source: each field's ``doc(...)`` holds what its CRD says (the description
``kubectl explain`` prints, limits, CEL rules with their messages, whether the API server defaults it), and
``make crds-gen`` writes ``crds/`` and the chart's copy from them (``api.crds``); a unit test fails when the
files and the types drift apart. Defaults here are the CRD defaults, so that code built from a dict without
API-server defaulting (the CLI, unit tests) behaves the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar

from cleanroom.api._schema import Rule, Schema, doc

GROUP = "cleanroom.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
DATASETS = "datasets"
WORKSPACES = "workspaces"
EXPORT_REQUESTS = "exportrequests"

# Shared by the two references to a snapshot (a derived Dataset's source and a Workspace's dataset).
_SNAPSHOT_DIGEST = Rule(
    "self == '' || self.matches('^sha256:[a-f0-9]{64}$')",
    "must be empty or a snapshot digest sha256:<64 hex digits>",
)
_CREDENTIALS = doc(
    "Secret with the read credentials (keys accessKey and secretKey for S3; username and password, or "
    "token, for DICOMweb). Read by the operator only; never copied into a workspace."
)


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

    namespace: str = field(metadata=doc("Namespace of the Secret.", min_length=1, max_length=63))
    name: str = field(metadata=doc("Name of the Secret.", min_length=1, max_length=253))


@dataclass(frozen=True)
class SecretKeyRef:
    """A reference to one data key of a Secret."""

    namespace: str = field(metadata=doc("Namespace of the Secret.", min_length=1, max_length=63))
    name: str = field(metadata=doc("Name of the Secret.", min_length=1, max_length=253))
    key: str = field(
        default="key", metadata=doc("Data key inside the Secret.", min_length=1, max_length=253, default=True)
    )


@dataclass(frozen=True)
class PseudonymTableRef:
    """A Secret key holding a CSV of original patient ID to pseudonym."""

    namespace: str = field(metadata=doc("Namespace of the Secret.", min_length=1, max_length=63))
    name: str = field(metadata=doc("Name of the Secret.", min_length=1, max_length=253))
    key: str = field(
        default="table.csv",
        metadata=doc("Data key inside the Secret.", min_length=1, max_length=253, default=True),
    )


@dataclass(frozen=True)
class S3Source:
    endpoint: str = field(
        metadata=doc(
            "Base URL of the S3 API, e.g. https://s3.eu-west-1.amazonaws.com or "
            "http://s3.cleanroom-system:7070. Use https outside a test cluster; certificates are "
            "always verified.",
            rules=(
                Rule(
                    "self.matches('^https?://[^\\\\s/]+(/.*)?$')",
                    "must be an http:// or https:// URL such as https://s3.example.org",
                ),
            ),
        )
    )
    bucket: str = field(
        metadata=doc(
            "Bucket holding the raw DICOM.",
            min_length=3,
            max_length=63,
            rules=(
                Rule(
                    "self.matches('^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$')",
                    "must be a valid S3 bucket name: 3-63 lower-case letters, digits, dots and hyphens",
                ),
            ),
        )
    )
    region: str = field(
        default="",
        metadata=doc(
            "Region name sent in request signatures; leave empty for servers that ignore it.", max_length=64
        ),
    )
    prefix: str = field(
        default="",
        metadata=doc(
            "Key prefix under which every object is read, e.g. prostate/2024/. Empty reads the whole bucket.",
            max_length=1024,
        ),
    )
    credentials_secret_ref: ObjectRef | None = field(
        default=None,
        metadata=_CREDENTIALS,
    )


@dataclass(frozen=True)
class DicomWebSource:
    url: str = field(
        metadata=doc(
            "DICOMweb base URL, e.g. https://pacs.hospital.example/dicom-web.",
            rules=(
                Rule(
                    "self.matches('^https?://[^\\\\s/]+(/.*)?$')",
                    "must be an http:// or https:// URL such as https://pacs.example.org/dicom-web",
                ),
            ),
        )
    )
    study_instance_uids: tuple[str, ...] = field(
        default=(),
        metadata=doc(
            "Only these studies; empty means every study the server lists.",
            json="studyInstanceUIDs",
            max_items=10000,
            items=Schema(max_length=64),
        ),
    )
    credentials_secret_ref: ObjectRef | None = field(
        default=None,
        metadata=_CREDENTIALS,
    )


@dataclass(frozen=True)
class DirectorySource:
    path: str = field(
        metadata=doc(
            "Absolute path of the directory; every file below it is read.",
            rules=(Rule("self.startsWith('/')", "must be an absolute path starting with /"),),
        )
    )


@dataclass(frozen=True)
class DatasetSource:
    name: str = field(metadata=doc("Name of the source Dataset.", min_length=1, max_length=253))
    snapshot: str = field(
        default="",
        metadata=doc(
            "Digest of the source snapshot (sha256:...); empty follows its latest Ready snapshot.",
            rules=(_SNAPSHOT_DIGEST,),
        ),
    )


@dataclass(frozen=True)
class Source:
    """Exactly one member is set (enforced by a CEL rule on the CRD)."""

    VALIDATIONS: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "[has(self.s3), has(self.dicomweb), has(self.directory), has(self.dataset)].filter(x, x).size() == 1",
            "set exactly one of source.s3, source.dicomweb, source.directory or source.dataset",
        ),
    )
    s3: S3Source | None = field(
        default=None,
        metadata=doc(
            "An S3 prefix on any S3-compatible server (AWS S3, MinIO, Ceph RGW, versitygw, GCS or "
            "Azure through an S3 gateway)."
        ),
    )
    dicomweb: DicomWebSource | None = field(
        default=None,
        metadata=doc(
            "A DICOMweb server (QIDO-RS to list studies, WADO-RS to fetch instances), e.g. Orthanc, "
            "dcm4chee or a cloud healthcare API."
        ),
    )
    directory: DirectorySource | None = field(
        default=None,
        metadata=doc(
            "A directory visible to the operator's pod (e.g. a mounted NFS share). Mostly for tests "
            "and small sites."
        ),
    )
    dataset: DatasetSource | None = field(
        default=None,
        metadata=doc(
            "Another Dataset's snapshot, so that a site pseudonymizes first and a central, anonymized "
            "Dataset is derived from it."
        ),
    )

    @property
    def kind(self) -> str:
        for name in ("s3", "dicomweb", "directory", "dataset"):
            if getattr(self, name) is not None:
                return name
        raise ValueError("source: set exactly one of s3, dicomweb, directory or dataset")


@dataclass(frozen=True)
class Deidentification:
    VALIDATIONS: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "self.method != 'Pseudonymize' || has(self.keySecretRef)",
            "method Pseudonymize needs keySecretRef: the site-held key that makes pseudonyms repeatable",
            field_path=".keySecretRef",
        ),
        Rule(
            "self.method != 'Anonymize' || (!has(self.keySecretRef) && !has(self.pseudonymTableSecretRef))",
            (
                "method Anonymize is irreversible and takes no keySecretRef or pseudonymTableSecretRef; "
                "remove them or use Pseudonymize"
            ),
        ),
        Rule(
            "!has(self.options) || !('RetainLongitudinalTemporalInformationFullDates' in self.options && 'RetainLongitudinalTemporalInformationModifiedDates' in self.options)",
            (
                "options RetainLongitudinalTemporalInformationFullDates and "
                "RetainLongitudinalTemporalInformationModifiedDates exclude each other; choose one"
            ),
            field_path=".options",
        ),
    )

    method: DeidentificationMethod = field(
        metadata=doc(
            "Pseudonymize: keyed and repeatable, the same patient always gets the same pseudonym "
            "under the site key. Anonymize: irreversible, a random key per run that is discarded."
        )
    )
    key_secret_ref: SecretKeyRef | None = field(
        default=None,
        metadata=doc(
            "The Secret holding the site's pseudonymization key (at least 32 bytes). Only its "
            "fingerprint is ever recorded."
        ),
    )
    pseudonym_table_secret_ref: PseudonymTableRef | None = field(
        default=None,
        metadata=doc(
            "Optional Secret with a CSV of original patient ID to pseudonym (e.g. EUPIDs). When set, "
            "patients missing from the table are quarantined, never guessed."
        ),
    )
    options: tuple[DeidentificationOption, ...] = field(
        default=(),
        metadata=doc(
            "PS3.15 Annex E options (Table E.1-1 columns) applied on top of the basic profile.",
            max_items=10,
            list_type="set",
        ),
    )
    burned_in_annotations: BurnedInAnnotationPolicy = field(
        default=BurnedInAnnotationPolicy.QUARANTINE,
        metadata=doc(
            "Quarantine (default) holds back images marked Burned In Annotation YES and object types "
            "that usually carry burned-in text (secondary capture, ultrasound) unless marked NO. "
            "Allow publishes them.",
            default=True,
        ),
    )


class LabelSelectorOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


@dataclass(frozen=True)
class LabelSelectorRequirement:
    VALIDATIONS: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "self.operator in ['In', 'NotIn'] ? has(self.values) && size(self.values) > 0 : !has(self.values) || size(self.values) == 0",
            "In and NotIn need values; Exists and DoesNotExist take none",
        ),
    )

    key: str = field(metadata=doc("The label key.", min_length=1, max_length=317))
    operator: LabelSelectorOperator = field(metadata=doc("In, NotIn, Exists or DoesNotExist."))
    values: tuple[str, ...] = field(
        default=(), metadata=doc("Values for In and NotIn.", max_items=64, items=Schema(max_length=63))
    )

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

    VALIDATIONS: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "(has(self.matchLabels) && size(self.matchLabels) > 0) || (has(self.matchExpressions) && size(self.matchExpressions) > 0)",
            (
                "an empty selector would admit every namespace; set matchLabels or matchExpressions "
                "(every namespace, if that is meant: key kubernetes.io/metadata.name, operator Exists)"
            ),
        ),
    )

    match_labels: Mapping[str, str] = field(
        default_factory=dict,
        metadata=doc(
            "Labels a namespace must carry with exactly these values.",
            max_properties=32,
            items=Schema(max_length=63),
        ),
    )
    match_expressions: tuple[LabelSelectorRequirement, ...] = field(
        default=(), metadata=doc("Requirements a namespace's labels must all meet.", max_items=32)
    )

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels.items()) and all(
            e.matches(labels) for e in self.match_expressions
        )


@dataclass(frozen=True)
class NamespaceSelection:
    """The namespaces (projects) that may hold Workspaces over a Dataset: listed by name or chosen by labels.
    Neither set admits none."""

    names: tuple[str, ...] = field(
        default=(),
        metadata=doc(
            "Namespaces admitted by name, e.g. prostate-ai.",
            max_items=256,
            list_type="set",
            items=Schema(
                min_length=1,
                max_length=63,
                rules=(
                    Rule(
                        "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
                        "must be a namespace name: lower-case letters, digits and hyphens",
                    ),
                ),
            ),
        ),
    )
    selector: LabelSelector | None = field(
        default=None,
        metadata=doc(
            "Namespaces admitted by their labels (a Kubernetes label selector), e.g. matchLabels "
            "{cleanroom.dev/project: prostate-ai}. Whoever may label namespaces decides with it."
        ),
    )

    def admits(self, namespace: str, labels: Mapping[str, str]) -> bool:
        return namespace in self.names or (self.selector is not None and self.selector.matches(labels))


@dataclass(frozen=True)
class Access:
    groups: tuple[str, ...] = field(
        default=(),
        metadata=doc(
            "Identity-provider groups (the JWT groups claim) whose members have access.",
            max_items=256,
            list_type="set",
            items=Schema(min_length=1, max_length=253),
        ),
    )
    users: tuple[str, ...] = field(
        default=(),
        metadata=doc(
            "Individual users (the JWT sub or email claim) with access.",
            max_items=1024,
            list_type="set",
            items=Schema(min_length=1, max_length=254),
        ),
    )
    admin_groups: tuple[str, ...] = field(
        default=(),
        metadata=doc(
            "The Dataset's admin role: identity-provider groups whose members (data stewards) may "
            "create and change Workspaces over it for its users without being users themselves. "
            "Starting one still takes a listed user.",
            max_items=64,
            list_type="set",
            items=Schema(min_length=1, max_length=253),
        ),
    )
    namespaces: NamespaceSelection = field(
        default=NamespaceSelection(),
        metadata=doc(
            "The namespaces (projects) that may hold Workspaces over this Dataset: those named, and "
            "those the selector matches. Neither set admits no namespace."
        ),
    )

    def allows(self, user: str, user_groups: tuple[str, ...] = ()) -> bool:
        """Whether a user, with the groups their identity provider asserts, may use the Dataset."""
        return user in self.users or any(group in self.groups for group in user_groups)

    def administers(self, user_groups: tuple[str, ...]) -> bool:
        """Whether a user with these groups holds the Dataset's admin role (may create and change its
        Workspaces for its users without being one)."""
        return any(group in self.admin_groups for group in user_groups)


@dataclass(frozen=True)
class Retention:
    keep_snapshots: int = field(
        default=3,
        metadata=doc(
            "Number of most recent snapshots kept; older ones are pruned unless a Workspace still uses them.",
            minimum=1,
            maximum=1000,
            default=True,
        ),
    )


@dataclass(frozen=True)
class IngestResources:
    """How the ingest of a Dataset runs where it runs as a Kubernetes Indexed Job (the operator's settings
    decide where it does: `ingest.mode` in the chart). Zero or empty takes the site's default."""

    parallelism: int = field(
        default=0,
        metadata=doc(
            "Shard pods that run at once (the Job's parallelism). 0: the site's default (chart value "
            "ingest.parallelism).",
            minimum=0,
            maximum=256,
            default=True,
        ),
    )
    files_per_shard: int = field(
        default=0,
        metadata=doc(
            "Source files per shard, one shard per completion index of the Job. A failed shard is retried "
            "alone (backoffLimitPerIndex), so smaller shards redo less. 0: the site's default "
            "(ingest.filesPerShard).",
            minimum=0,
            maximum=100000,
            default=True,
        ),
    )
    cpu: str = field(
        default="",
        metadata=doc(
            "CPU of each shard pod (request and limit), a quantity such as 1 or 500m; the pod de-identifies "
            "with one worker process per whole core. Empty: the site's default (ingest.cpu).",
            default=True,
            rules=(
                Rule(
                    "self == '' || (isQuantity(self) && quantity(self).isGreaterThan(quantity('0')) && quantity(self).compareTo(quantity('64')) <= 0)",
                    "must be empty or a CPU quantity between 1m and 64, such as 2 or 500m",
                ),
            ),
        ),
    )
    memory: str = field(
        default="",
        metadata=doc(
            "Memory of each shard pod (request and limit), a quantity such as 2Gi; a worker holds one file at "
            "a time. Empty: the site's default (ingest.memory).",
            default=True,
            rules=(
                Rule(
                    "self == '' || (isQuantity(self) && quantity(self).compareTo(quantity('128Mi')) >= 0 && quantity(self).compareTo(quantity('1Ti')) <= 0)",
                    "must be empty or a memory quantity between 128Mi and 1Ti, such as 4Gi",
                ),
            ),
        ),
    )


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

    steward_group: str = field(
        default="",
        metadata=doc(
            "The group (as the API server authenticates users, e.g. the identity provider's groups "
            "claim) whose members are this Dataset's data stewards: one of them must approve each "
            "export.",
            max_length=253,
        ),
    )
    max_bytes: int = field(
        default=100 * 1024 * 1024,
        metadata=doc(
            "The most bytes one ExportRequest may carry, all files together (default 100 MiB).",
            minimum=1,
            format="int64",
            default=True,
        ),
    )
    allowed_types: tuple[ExportFileType, ...] = field(
        default=DEFAULT_EXPORT_TYPES,
        metadata=doc(
            "The file types that may leave, judged by content, not by name: Text (UTF-8 text, e.g. "
            "Markdown or Python), CSV, JSON, PNG, JPEG, PDF, NumPy (.npy, .npz), NIfTI, SafeTensors, "
            "PyTorch. Any other type, and DICOM always, is refused.",
            max_items=10,
            list_type="set",
            default=True,
        ),
    )


@dataclass(frozen=True)
class DatasetSpec:
    source: Source = field(
        metadata=doc("Where the raw DICOM comes from. Set exactly one of s3, dicomweb, directory or dataset.")
    )
    deidentification: Deidentification = field(
        metadata=doc(
            "How the DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile is applied."
        )
    )
    description: str = field(
        default="",
        metadata=doc(
            'Free text for people browsing the catalogue, e.g. "Prostate mpMRI from three sites, 2019-2024".',
            max_length=1024,
        ),
    )
    access: Access = field(
        default=Access(),
        metadata=doc(
            "Who may open Workspaces over this Dataset, and where. A Workspace's users, and whoever "
            "created or last changed it (as the API server authenticated them, recorded by the "
            "cleanroom admission policy), must be listed here or belong to a listed group; only a "
            "listed user starts one. A Workspace in a namespace that namespaces does not admit is "
            "refused (AccessDenied) and gets nothing."
        ),
    )
    retention: Retention = field(
        default=Retention(), metadata=doc("How many published snapshots to keep.", default=True)
    )
    ingest: IngestResources = field(
        default=IngestResources(),
        metadata=doc(
            "Parallelism and per-pod resources of the ingest where it runs as an Indexed Job of shard pods; "
            "fields left out take the site's defaults. Not part of what a snapshot depends on: changing them "
            "does not re-ingest.",
            default=True,
        ),
    )
    export: ExportPolicy = field(
        default=ExportPolicy(),
        metadata=doc(
            "What may leave a Workspace over this Dataset through the airlock (ExportRequest): the "
            "size and types of files, and the group of data stewards who must approve each export "
            "(with a security officer). No stewardGroup: no export is ever approved.",
            default=True,
        ),
    )


@dataclass(frozen=True)
class WorkspaceDatasetRef:
    name: str = field(metadata=doc("Name of the Dataset (cluster-scoped).", min_length=1, max_length=253))
    snapshot: str = field(
        default="",
        metadata=doc(
            "Snapshot digest (sha256:...) to mount. Empty mounts the Dataset's latest Ready snapshot, "
            "pinned in status.snapshot when the workspace starts so it never changes under a running "
            "analysis.",
            default=True,
            rules=(_SNAPSHOT_DIGEST,),
        ),
    )


@dataclass(frozen=True)
class WorkspaceResources:
    VALIDATIONS: ClassVar[tuple[Rule, ...]] = (
        Rule("!has(self.gpuType) || self.gpu > 0", "gpuType needs gpu of at least 1", field_path=".gpuType"),
    )

    gpu: int = field(
        default=0,
        metadata=doc(
            "Number of NVIDIA GPUs (nvidia.com/gpu); 0 for a CPU-only workspace.",
            minimum=0,
            maximum=16,
            default=True,
        ),
    )
    gpu_type: str = field(
        default="",
        metadata=doc(
            "GPU model, e.g. nvidia-a100-80gb, mapped by the operator's configuration to the node "
            "labels of the cluster (GPU feature discovery, GKE, EKS or AKS). Empty: any GPU.",
            max_length=128,
            rules=(
                Rule(
                    "self.matches('^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$')",
                    "must be lower-case letters, digits, dots and hyphens, e.g. nvidia-a100-80gb",
                ),
            ),
        ),
    )
    cpu: str = field(
        default="2",
        metadata=doc(
            "CPU cores for the notebook (request and limit), a Kubernetes quantity such as 8 or 500m.",
            int_or_string=True,
            default=True,
            rules=(
                Rule(
                    "isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0')) && quantity(string(self)).compareTo(quantity('256')) <= 0",
                    "must be a CPU quantity between 1m and 256, such as 8 or 500m",
                ),
            ),
        ),
    )
    memory: str = field(
        default="8Gi",
        metadata=doc(
            "Memory for the notebook (request and limit), a Kubernetes quantity such as 64Gi.",
            int_or_string=True,
            default=True,
            rules=(
                Rule(
                    "isQuantity(string(self)) && quantity(string(self)).compareTo(quantity('64Mi')) >= 0 && quantity(string(self)).compareTo(quantity('4Ti')) <= 0",
                    "must be a memory quantity between 64Mi and 4Ti, such as 64Gi",
                ),
            ),
        ),
    )
    home_storage: str = field(
        default="10Gi",
        metadata=doc(
            "Size of the persistent home volume for code and results, a quantity such as 50Gi.",
            int_or_string=True,
            default=True,
            rules=(
                Rule(
                    "isQuantity(string(self)) && quantity(string(self)).compareTo(quantity('100Mi')) >= 0 && quantity(string(self)).compareTo(quantity('100Ti')) <= 0",
                    "must be a storage quantity between 100Mi and 100Ti, such as 50Gi",
                ),
            ),
        ),
    )


@dataclass(frozen=True)
class Lifetime:
    expires_after: str = field(
        default="168h",
        metadata=doc(
            "Duration after creation after which the workspace is stopped and, after a grace period, "
            "deleted (home volume included), e.g. 168h. Units h, m, s.",
            default=True,
            rules=(
                Rule(
                    "self.matches('^([0-9]+(h|m|s))+$') && duration(self) > duration('0s')",
                    "must be a positive duration such as 168h, 90m or 1h30m (units h, m, s)",
                ),
            ),
        ),
    )
    idle_timeout: str = field(
        default="2h",
        metadata=doc(
            "A session idle for this long is stopped (the home volume is kept), e.g. 2h.",
            default=True,
            rules=(
                Rule(
                    "self.matches('^([0-9]+(h|m|s))+$') && duration(self) > duration('0s')",
                    "must be a positive duration such as 2h, 30m or 1h30m (units h, m, s)",
                ),
            ),
        ),
    )


@dataclass(frozen=True)
class WorkspaceSpec:
    dataset: WorkspaceDatasetRef = field(
        metadata=doc("The Dataset whose snapshot is mounted read-only at /data.")
    )
    users: tuple[str, ...] = field(
        metadata=doc(
            "Users (the JWT sub or email claim) who may open this workspace. Each must have access to "
            "the Dataset (spec.access of the Dataset), directly or through a group.",
            min_items=1,
            max_items=64,
            list_type="set",
            items=Schema(
                min_length=1,
                max_length=254,
                rules=(
                    Rule("!self.contains(' ')", "a user name may not contain spaces"),
                    Rule(
                        "!self.matches('[[:cntrl:]]')",
                        (
                            "a user name may not contain a line break, tab or other control character: give each "
                            "user's JWT sub or email claim exactly, one per list item"
                        ),
                    ),
                ),
            ),
        )
    )
    purpose: str = field(
        metadata=doc(
            'Why the data is processed (GDPR purpose limitation), e.g. "Train a lesion segmentation '
            'model for study PCa-2024-07". Recorded with every audit event of this workspace.',
            min_length=10,
            max_length=1024,
        )
    )
    image: str = field(
        metadata=doc(
            "Notebook container image running the single-user Jupyter server, e.g. "
            "registry.example.org/cleanroom/notebook-cuda:2026.11. Must come from a registry the "
            "operator allows.",
            min_length=1,
            max_length=512,
            rules=(
                Rule(
                    "self.matches('^[a-z0-9][a-zA-Z0-9._/:@-]*$')",
                    "must be an image reference such as registry.example.org/cleanroom/notebook-cuda:2026.11",
                ),
            ),
        )
    )
    resources: WorkspaceResources = field(
        default=WorkspaceResources(),
        metadata=doc(
            "Compute and storage for the notebook pod. Omitted values come from the operator's defaults.",
            default=True,
        ),
    )
    lifetime: Lifetime = field(
        default=Lifetime(), metadata=doc("When the workspace stops by itself.", default=True)
    )
    running: bool = field(
        default=True,
        metadata=doc(
            "false stops the notebook pod and keeps the home volume; true starts it. Setting it to "
            "true (or creating the Workspace with it) needs the annotation cleanroom.dev/started-by "
            "equal to your user name, unless the hub does it for you; only a user the Dataset lists "
            "starts a Workspace.",
            default=True,
        ),
    )


class ExportRole(StrEnum):
    DATA_STEWARD = "DataSteward"
    SECURITY_OFFICER = "SecurityOfficer"


class ExportVerdict(StrEnum):
    APPROVE = "Approve"
    REJECT = "Reject"


@dataclass(frozen=True)
class ExportDecisionProof:
    """A decision made on the officers' page: the approver's sign-in for this one decision (airlock.proofs)."""

    id_token: str = field(
        metadata=doc(
            "The ID token the identity provider issued to the officers' page for this decision alone: "
            "its nonce commits to this ExportRequest (namespace, name, uid) and to the decision's role, "
            "verdict and reason, so it proves nothing else. The operator verifies it (signature, issuer, "
            "the page's client as audience, nonce) and takes the approver's name and groups from it.",
            min_length=1,
            max_length=16384,
        )
    )
    salt: str = field(
        metadata=doc(
            "The random value mixed into the nonce (base64url), so that no two sign-ins share one.",
            min_length=16,
            max_length=128,
        )
    )


@dataclass(frozen=True)
class ExportDecision:
    """One approver's decision; ``by`` and ``groups`` are held to the authenticated user by admission, or,
    for a decision made on the officers' page, to the sign-in its ``proof`` carries (the operator checks)."""

    by: str = field(
        metadata=doc(
            "The approver's user name, exactly as the API server authenticates them.",
            min_length=1,
            max_length=254,
        )
    )
    role: ExportRole = field(
        metadata=doc(
            "DataSteward (a member of the Dataset's spec.export.stewardGroup) or SecurityOfficer (a "
            "member of the security officers' group of the installation)."
        )
    )
    verdict: ExportVerdict = field(metadata=doc("Approve or Reject. One rejection rejects the request."))
    reason: str = field(
        metadata=doc(
            "What was looked at and why this verdict; a rejection's reason reaches the requester.",
            min_length=1,
            max_length=2048,
        )
    )
    groups: tuple[str, ...] = field(
        default=(),
        metadata=doc(
            "The approver's groups that hold the role (among their authenticated groups), e.g. "
            "prostate-ai-stewards.",
            max_items=32,
            items=Schema(min_length=1, max_length=253),
        ),
    )
    proof: ExportDecisionProof | None = field(
        default=None,
        metadata=doc(
            "Set by the officers' page only: the approver's sign-in for this decision. With a proof, "
            "`by` and `groups` are the ID token's (the operator counts the decision only when the token "
            "verifies and names them); without one, admission holds them to the user the API server "
            "authenticated."
        ),
    )


@dataclass(frozen=True)
class ExportRequestSpec:
    VALIDATIONS: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "self.workspace == oldSelf.workspace && self.files == oldSelf.files && self.justification == oldSelf.justification",
            "workspace, files and justification cannot change once requested; create another ExportRequest",
        ),
        Rule(
            "!has(oldSelf.decisions) || (has(self.decisions) && oldSelf.decisions.all(d, d in self.decisions) && size(self.decisions) <= size(oldSelf.decisions) + 1)",
            "decisions are only added, one at a time; a decision once made cannot be changed or removed",
            field_path=".decisions",
        ),
    )

    workspace: str = field(
        metadata=doc(
            "Name of the Workspace (in this namespace) whose home folder holds the files.",
            min_length=1,
            max_length=63,
        )
    )
    files: tuple[str, ...] = field(
        metadata=doc(
            "The files to export, as paths relative to the home folder (/home/jovyan), e.g. "
            "results/metrics.csv or models/unet.safetensors. Regular files only; a symbolic link is "
            "refused.",
            min_items=1,
            max_items=64,
            list_type="set",
            items=Schema(
                min_length=1,
                max_length=1024,
                rules=(
                    Rule(
                        "!self.startsWith('/') && !self.split('/').exists(p, p == '' || p == '.' || p == '..')",
                        (
                            "must be a path relative to the home folder, without empty, . or .. parts, e.g. "
                            "results/metrics.csv"
                        ),
                    ),
                    Rule(
                        "!self.matches('[[:cntrl:]]')",
                        "a path may not contain a line break, tab or other control character",
                    ),
                ),
            ),
        )
    )
    justification: str = field(
        metadata=doc(
            'Why these results must leave and what they hold, for the approvers, e.g. "Aggregate Dice '
            "scores per fold for the paper's table 2; no per-patient values\".",
            min_length=20,
            max_length=4096,
        )
    )
    decisions: tuple[ExportDecision, ...] = field(
        default=(),
        metadata=doc(
            "The approvers' decisions, each added by the approver. The cleanroom admission policy "
            "admits a new decision only when `by` is the user the API server authenticated, its "
            "groups are among that user's groups, the approver is not the requester and has not "
            "decided before. The operator counts it only when the groups hold the role claimed (the "
            "Dataset's spec.export.stewardGroup for DataSteward, the security officers' group for "
            "SecurityOfficer).",
            max_items=16,
            rules=(Rule("self.all(d, self.filter(e, e.by == d.by).size() == 1)", "one decision per person"),),
        ),
    )
