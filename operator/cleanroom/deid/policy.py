"""One compiled de-identification policy: everything both codecs (``engine`` on pydicom objects, ``rewrite``
on encoded bytes) decide, decided once per set of options.

A codec walks its own representation of a header and asks the policy what to do with each element
(``Policy.decide``); it only knows how to carry the answer out on its values. The policy holds the PS3.15
Table E.1-1 actions for the chosen options, the option flags, the attributes whose original values are the
patient's identifiers (keywords resolved through the data dictionary), the E.1.1 markers, and the checks
both codecs make before cleaning (burned-in annotations, truncated pixel data).
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from cleanroom import __version__
from cleanroom.api import BurnedInAnnotationPolicy, DeidentificationMethod, DeidentificationOption
from cleanroom.deid import dictionary
from cleanroom.deid.keys import Keyring
from cleanroom.deid.markers import method_codes
from cleanroom.deid.profile import Action, Profile, TableEntry, compile_profile, resolve
from cleanroom.deid.safe_private import SAFE_PRIVATE
from cleanroom.deid.values import STRING_VRS, TEXT_VRS

Option = DeidentificationOption

DATE_VRS = frozenset({"DA", "DT"})
# Action C rewrites text of these VRs (identifiers scrubbed out); dates are shifted and UIDs remapped instead.
CLEANED_TEXT_VRS = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT", "AE", "UR", "CS"})
# Inside a dummied sequence, names and free text are replaced; coded strings, numbers and UIDs keep their
# meaning (dates and UIDs the table lists are handled by their own rows).
DUMMIED_VRS = frozenset({"AE", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})

# Overlay Data (60xx,3000): removing it leaves an incomplete Overlay Plane module, so the whole group goes.
OVERLAY_GROUPS, OVERLAY_DATA_ELEMENT = 0x6000, 0x3000
# The SOP classes whose pixels usually carry burned-in text (PS3.15 E.1.1 note on Burned In Annotation):
# secondary capture (1.2.840.10008.5.1.4.1.1.7 and its multi-frame kinds) and ultrasound.
BURNED_IN_PRONE_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.7",
    "1.2.840.10008.5.1.4.1.1.6.",
    "1.2.840.10008.5.1.4.1.1.3.1",
)
# The file meta's Source Application Entity Title names the sender; PS3.10 7.1 lets it name us instead.
SOURCE_AE_TITLE = "CLEANROOM"

# The patient's identifiers in the original header: names, IDs, birth date, address. Every person name
# anywhere in the header (staff included) counts too; the scan finds them by VR.
IDENTIFYING_KEYWORDS = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "MedicalRecordLocator",
    "AccessionNumber",
    "PatientBirthDate",
    "IssuerOfPatientID",
)
# Who and where, beyond the patient: scrubbed out of cleaned text unless the matching retain option keeps
# them on purpose.
INSTITUTION_KEYWORDS = ("InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName")
DEVICE_KEYWORDS = ("StationName", "DeviceSerialNumber")


@dataclass(frozen=True)
class DeidConfig:
    """What a Dataset asks for: the method, the key, the options, what to do about burned-in text, and
    optionally the site's own pseudonyms."""

    method: DeidentificationMethod
    keyring: Keyring
    options: frozenset[DeidentificationOption] = frozenset()
    burned_in_annotations: BurnedInAnnotationPolicy = BurnedInAnnotationPolicy.QUARANTINE
    # Original patient ID -> pseudonym (e.g. EUPIDs); when given, a patient not in it is quarantined.
    pseudonym_table: Mapping[str, str] | None = field(default=None, repr=False)


def _tag(keyword: str) -> int:
    tag = dictionary.tag(keyword)
    if tag is None:
        raise ValueError(f"{keyword} is not in pydicom's data dictionary")
    return int(tag)


PATIENT_ID, PATIENT_NAME = _tag("PatientID"), _tag("PatientName")
OTHER_PATIENT_IDS_SEQUENCE = _tag("OtherPatientIDsSequence")
SOP_CLASS, SOP_INSTANCE = _tag("SOPClassUID"), _tag("SOPInstanceUID")
STUDY, SERIES = _tag("StudyInstanceUID"), _tag("SeriesInstanceUID")
MODALITY, BODY_PART = _tag("Modality"), _tag("BodyPartExamined")
BURNED_IN = _tag("BurnedInAnnotation")
CHARACTER_SET = _tag("SpecificCharacterSet")
# What becomes the pseudonym (the patient's identity, replaced rather than removed).
PSEUDONYMIZED = ((PATIENT_ID, "LO"), (PATIENT_NAME, "PN"))
# The file meta attributes a de-identified file rewrites (PS3.10 7.1).
MEDIA_SOP_INSTANCE, SOURCE_AE = _tag("MediaStorageSOPInstanceUID"), _tag("SourceApplicationEntityTitle")


class Inside(enum.Enum):
    """How an attribute the table does not list is treated inside a sequence, by the sequence's own action."""

    PLAIN = "plain"  # kept (the table decides)
    CLEANED = "cleaned"  # C: identifiers scrubbed out
    DUMMIED = "dummied"  # D: replaced by dummy values, structure kept


class Operation(enum.Enum):
    """What a codec does to one element's value."""

    KEEP = "keep"
    REMOVE = "remove"
    EMPTY = "empty"  # zero-length value, or a sequence with no items
    DUMMY = "dummy"  # a dummy value for the VR
    DUMMY_IF_SET = "dummy-if-set"  # a dummy unless the value is empty (inside a dummied sequence)
    UID = "uid"  # every UID remapped (kept as it is under Retain UIDs)
    CLEAN = "clean"  # action C on each value (``Policy.clean_value``)
    DESCEND = "descend"  # a sequence whose items are walked, with ``Decision.inside`` for what they hold


@dataclass(frozen=True)
class Decision:
    operation: Operation
    inside: Inside = Inside.PLAIN
    # Removing this element removes its whole (overlay) group.
    removes_group: bool = False


KEEP, REMOVE, EMPTY = Decision(Operation.KEEP), Decision(Operation.REMOVE), Decision(Operation.EMPTY)
_WITHIN_SEQUENCE = {Action.DUMMY: Inside.DUMMIED, Action.CLEAN: Inside.CLEANED}


@dataclass(frozen=True)
class Marker:
    """One attribute the PS3.15 E.1.1 markers write: its values, or for a sequence its items."""

    tag: int
    vr: str
    values: tuple[str, ...] = ()
    items: tuple[tuple[Marker, ...], ...] = ()


@dataclass(frozen=True)
class Policy:
    """Table E.1-1 and the options, compiled once; both codecs read only this."""

    options: frozenset[DeidentificationOption]
    profile: Profile
    retain_uids: bool
    modified_dates: bool
    retain_safe_private: bool
    # Original values that are the patient's identifiers: tag -> whether it holds a person name.
    identifier_tags: Mapping[int, bool]
    # Institution and device attributes whose values are scrubbed out of cleaned text.
    context_tags: tuple[int, ...]
    markers: tuple[Marker, ...]
    # What happens to an attribute Table E.1-1 does not list, by VR (KEEP where absent), and the attributes
    # known to be safe, which keep their value whatever its VR.
    unlisted: Mapping[str, Action]
    safe_tags: frozenset[int]
    _decisions: dict[tuple[int, str, Inside, bool], Decision] = field(
        default_factory=dict, repr=False, compare=False
    )
    _deciders: dict[tuple[Inside, bool], _Decider] = field(default_factory=dict, repr=False, compare=False)

    def decide(self, tag: int, vr: str, inside: Inside = Inside.PLAIN, nested: bool = False) -> Decision:
        """What happens to a public element (private ones: ``keeps_private``), inside a sequence whose own
        action says ``inside``; ``nested`` when the element is in a sequence item at all."""
        key = (tag, vr, inside, nested)
        found = self._decisions.get(key)
        if found is None:
            found = self._decisions[key] = self._decide(tag, vr, inside, nested)
        return found

    def decisions(self, inside: Inside, nested: bool) -> Callable[[int, str], Decision]:
        """``decide`` for elements of one kind of item, remembered by (tag, VR) alone (the codec's hot loop
        hashes no enum member)."""
        key = (inside, nested)
        found = self._deciders.get(key)
        if found is None:
            found = self._deciders[key] = _Decider(self, inside, nested)
        return found

    def _decide(self, tag: int, vr: str, inside: Inside, nested: bool) -> Decision:
        if tag & 0xFFFF == 0:
            # Group lengths are retired outside the file meta (PS3.5 7.2) and would be wrong after cleaning.
            return REMOVE
        action = self.profile.action(tag)
        if action is None and inside is Inside.PLAIN and vr != "SQ":
            action = self.unlisted.get(vr, Action.KEEP) if tag not in self.safe_tags else Action.KEEP
        if action is Action.REMOVE:
            overlay = tag >> 24 == OVERLAY_GROUPS >> 8 and tag & 0xFFFF == OVERLAY_DATA_ELEMENT
            return Decision(Operation.REMOVE, removes_group=overlay)
        if vr == "SQ":
            return _sequence_decision(action, inside, nested)
        if action is None or action is Action.KEEP:
            if inside is Inside.CLEANED and vr in TEXT_VRS:
                return Decision(Operation.CLEAN)
            if inside is Inside.DUMMIED and vr in DUMMIED_VRS:
                return Decision(Operation.DUMMY_IF_SET)
            return KEEP
        if action in (Action.ZERO, Action.ZERO_OR_REMOVE):
            return EMPTY
        if action is Action.DUMMY:
            return Decision(Operation.UID if vr == "UI" else Operation.DUMMY)
        if action is Action.UID:
            return Decision(Operation.UID)
        # C on a binary value (Overlay Data under Clean Graphics) has nothing to scrub: it stays as it is.
        return Decision(Operation.CLEAN) if vr in STRING_VRS else KEEP

    def acts_on(self, tag: int) -> bool:
        """Whether the table changes this attribute (an action other than K)."""
        return self.profile.action(tag) not in (None, Action.KEEP)

    def hides(self, tag: int, vr: str) -> bool:
        """Whether the profile removes or changes this attribute's value at the top level (its original value
        is then not to be found anywhere in the output)."""
        return self.decide(tag, vr).operation is not Operation.KEEP

    def keeps_private(self, creator: str, element: int) -> bool:
        """Whether a private attribute stays: only under Retain Safe Private, and only on the safe list."""
        return self.retain_safe_private and (creator, element & 0xFF) in SAFE_PRIVATE

    def shifts_dates(self, vr: str) -> bool:
        """Whether action C on a value of this VR moves it by the patient's date offset."""
        return vr in DATE_VRS and self.modified_dates


class _Decider:
    """``Policy.decide`` for one (inside, nested), remembered by (tag, VR)."""

    def __init__(self, policy: Policy, inside: Inside, nested: bool) -> None:
        self.policy, self.inside, self.nested = policy, inside, nested
        self.known: dict[tuple[int, str], Decision] = {}

    def __call__(self, tag: int, vr: str) -> Decision:
        found = self.known.get((tag, vr))
        if found is None:
            found = self.known[tag, vr] = self.policy.decide(tag, vr, self.inside, self.nested)
        return found


def _sequence_decision(action: Action | None, inside: Inside, nested: bool) -> Decision:
    if action is None or action is Action.KEEP:
        return Decision(Operation.DESCEND, inside)
    if action is Action.ZERO_OR_REMOVE and nested:
        # X/Z sequences are Type 2 at the top level (Referenced Study Sequence in General Study), where empty
        # is valid, but Type 3 inside macros, where only absent is.
        return REMOVE
    if action in (Action.ZERO, Action.ZERO_OR_REMOVE):
        return EMPTY
    # D keeps the items (a Type 1 sequence stays valid) with every text inside dummied; U keeps them so the
    # UIDs inside are replaced; C keeps them and scrubs identifiers out of their text.
    return Decision(Operation.DESCEND, _WITHIN_SEQUENCE.get(action, Inside.PLAIN))


def _markers(options: frozenset[DeidentificationOption]) -> tuple[Marker, ...]:
    """PS3.15 E.1.1: Patient Identity Removed, the method in words and in codes, and the date status."""
    # LO is limited to 64 characters a value, so each part is a value of its own (VM 1-n).
    chosen = (o.value for o in DeidentificationOption if o in options)
    method = (f"cleanroom {__version__}", "PS3.15 E Basic Profile", *chosen)
    codes = tuple(
        (
            Marker(_tag("CodeValue"), "SH", (value,)),
            Marker(_tag("CodingSchemeDesignator"), "SH", ("DCM",)),
            Marker(_tag("CodeMeaning"), "LO", (meaning,)),
        )
        for value, meaning in method_codes(options)
    )
    if Option.RETAIN_LONGITUDINAL_FULL_DATES in options:
        longitudinal = "UNMODIFIED"
    elif Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in options:
        longitudinal = "MODIFIED"
    else:
        longitudinal = "REMOVED"
    return (
        Marker(_tag("PatientIdentityRemoved"), "CS", ("YES",)),
        Marker(_tag("DeidentificationMethod"), "LO", method),
        Marker(_tag("DeidentificationMethodCodeSequence"), "SQ", items=codes),
        Marker(_tag("LongitudinalTemporalInformationModified"), "CS", (longitudinal,)),
    )


# Free text an attribute the table does not list may hold: cleaned (action C) like the table's descriptions.
UNLISTED_TEXT_VRS = ("AE", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT")
# Dates and times the table does not list are treated as it treats Acquisition Date and Time: removed, kept
# under Full Dates, shifted under Modified Dates.
UNLISTED_DATE_ROW = TableEntry(
    name="(a date or time Table E.1-1 does not list)",
    tag="",
    basic="X/Z",
    options={"rtnLongFullDatesOpt": "K", "rtnLongModifDatesOpt": "C"},
)
# Free-text attributes the table does not list that say what made the image, never who or where: kept.
SAFE_KEYWORDS = (
    "Manufacturer",
    "ManufacturerModelName",
    "SoftwareVersions",
    "CodeValue",
    "CodingSchemeDesignator",
    "CodingSchemeVersion",
    "CodeMeaning",
    "SequenceName",
    "ReceiveCoilName",
    "TransmitCoilName",
    "RescaleType",
)


def _unlisted(options: frozenset[DeidentificationOption]) -> dict[str, Action]:
    """The action for an attribute Table E.1-1 does not list, by its VR (see docs/design.md)."""
    date = resolve(UNLISTED_DATE_ROW, options)
    return {**{vr: Action.CLEAN for vr in UNLISTED_TEXT_VRS}, **{vr: date for vr in ("DA", "DT", "TM")}}


@functools.cache
def compile_policy(options: frozenset[DeidentificationOption]) -> Policy:
    """The policy for ``options``, compiled once per process and set of options."""
    context = ([] if Option.RETAIN_INSTITUTION_IDENTITY in options else list(INSTITUTION_KEYWORDS)) + (
        [] if Option.RETAIN_DEVICE_IDENTITY in options else list(DEVICE_KEYWORDS)
    )
    return Policy(
        options=options,
        profile=compile_profile(options),
        retain_uids=Option.RETAIN_UIDS in options,
        modified_dates=Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in options,
        retain_safe_private=Option.RETAIN_SAFE_PRIVATE in options,
        identifier_tags={_tag(k): dictionary.vr(_tag(k)) == "PN" for k in IDENTIFYING_KEYWORDS},
        context_tags=tuple(_tag(k) for k in context),
        markers=_markers(options),
        unlisted=_unlisted(options),
        safe_tags=frozenset(_tag(k) for k in SAFE_KEYWORDS),
    )


@functools.lru_cache(maxsize=4096)
def attribute_name(tag: int) -> str:
    """How reports name an attribute: its keyword, or (GGGG,EEEE) when the dictionary has none."""
    return dictionary.keyword(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def burned_in_reason(burned_in: str, sop_class: str, policy: BurnedInAnnotationPolicy) -> str | None:
    """Why pixels may carry burned-in identifiers, or None (PS3.15 E.1.1: the profile does not clean pixels),
    from the Burned In Annotation and SOP Class UID values."""
    marked = burned_in.strip().upper()
    if marked == "YES":
        return "Burned In Annotation is YES"
    if policy is BurnedInAnnotationPolicy.ALLOW or marked == "NO":
        return None
    if sop_class.startswith(BURNED_IN_PRONE_PREFIXES):
        return f"SOP class {sop_class} usually carries burned-in text and Burned In Annotation is not NO"
    return None


def expected_pixel_bytes(
    rows: int, columns: int, samples: int | None, bits: int | None, frames: int | None
) -> int:
    """Bytes of native pixel data an image header promises (PS3.5 8.1.1): Rows x Columns x Samples per Pixel
    x Bits Allocated x Number of Frames, rounded up to whole bytes; an absent attribute counts as its
    default (1 sample, 8 bits, 1 frame)."""
    samples = 1 if samples is None else samples
    bits = 8 if bits is None else bits
    return (rows * columns * samples * bits * (frames or 1) + 7) // 8
