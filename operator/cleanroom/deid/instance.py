"""What de-identifying one instance needs beyond the policy: its key, its date offset, its identifiers, and
the record of what was cleaned.

Both codecs carry the policy's decisions out with these value operations, one string value at a time, so
a value is replaced the same way whichever codec holds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cleanroom.deid import values
from cleanroom.deid.clean_file import Cleaned
from cleanroom.deid.keys import Keyring
from cleanroom.deid.phi import Header, Identifiers, Scanner, gather
from cleanroom.deid.policy import CLEANED_TEXT_VRS, DeidConfig, Policy, attribute_name, compile_policy

# What an identifier found in free text becomes (as Google's Cloud Healthcare de-identification writes it).
MARKER = "[CTX]"

# Where a value is: the path of the item it is in ("" at the top level, "Seq[0]." inside) and its tag.
Where = tuple[str, int]


@dataclass(frozen=True)
class Instance:
    policy: Policy
    keyring: Keyring
    date_offset: int
    identifiers: Identifiers
    cleaned: set[Cleaned] = field(default_factory=set)

    def uid(self, text: str) -> str:
        """A UID remapped consistently (PS3.15 action U), or as it is under Retain UIDs."""
        return text if self.policy.retain_uids else self.keyring.uid(text)

    def clean(self, vr: str, text: str, where: Where) -> str:
        """Action C on one value: a date moved by the patient's offset under Modified Dates, identifiers
        (the institution's and device's included) replaced in text, a UID remapped; any other value only
        loses the patient's identifiers (``residual``)."""
        if self.policy.shifts_dates(vr):
            shift = values.shift_da if vr == "DA" else values.shift_dt
            return shift(text, self.date_offset)
        if vr in CLEANED_TEXT_VRS:
            return self._replace(self.identifiers.scrubbed, vr, text, where)
        if vr == "UI":
            return self.uid(text)
        return self.residual(vr, text, where)

    def residual(self, vr: str, text: str, where: Where) -> str:
        """A kept value without the original header's identifiers: each replaced by the marker in free text,
        the whole value replaced by the VR's dummy where a marker does not fit."""
        return self._replace(self.identifiers.residual, vr, text, where)

    def _replace(self, scanner: Scanner, vr: str, text: str, where: Where) -> str:
        cleaned, hits = scanner.replace(text, MARKER)
        if not hits:
            return text
        attribute = where[0] + attribute_name(where[1])
        self.cleaned.update(Cleaned(attribute, hit.source) for hit in hits)
        if vr not in values.FREE_TEXT_VRS or len(cleaned) > values.MAX_CHARACTERS.get(vr, len(cleaned)):
            return str(values.dummy_value(vr))
        return cleaned

    def report(self) -> tuple[Cleaned, ...]:
        return tuple(sorted(self.cleaned))


def start(config: DeidConfig, original_id: str, header: Header) -> Instance:
    """The instance whose original header ``header`` reads and whose patient ID is ``original_id``."""
    policy = compile_policy(config.options)
    return Instance(
        policy=policy,
        keyring=config.keyring,
        date_offset=config.keyring.date_offset_days(original_id),
        identifiers=gather(policy, header),
    )
