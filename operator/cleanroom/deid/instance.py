"""What de-identifying one instance needs beyond the policy: its key, its date offset and its identifiers.

Both codecs carry the policy's decisions out with these value operations, one string value at a time, so
a value is replaced the same way whichever codec holds it.
"""

from __future__ import annotations

from dataclasses import dataclass

from cleanroom.deid import values
from cleanroom.deid.keys import Keyring
from cleanroom.deid.phi import Header, Identifiers, gather
from cleanroom.deid.policy import CLEANED_TEXT_VRS, DeidConfig, Policy, compile_policy


@dataclass(frozen=True)
class Instance:
    policy: Policy
    keyring: Keyring
    date_offset: int
    identifiers: Identifiers

    def uid(self, text: str) -> str:
        """A UID remapped consistently (PS3.15 action U), or as it is under Retain UIDs."""
        return text if self.policy.retain_uids else self.keyring.uid(text)

    def clean(self, vr: str, text: str) -> str:
        """Action C on one value: a date moved by the patient's offset under Modified Dates, identifiers
        scrubbed out of text, a UID remapped; times and other values stay."""
        if vr == "TM":
            return text
        if self.policy.shifts_dates(vr):
            shift = values.shift_da if vr == "DA" else values.shift_dt
            return shift(text, self.date_offset)
        if vr in CLEANED_TEXT_VRS:
            return self.identifiers.scrubbed.scrub(text)
        if vr == "UI":
            return self.uid(text)
        return text


def start(config: DeidConfig, original_id: str, header: Header) -> Instance:
    """The instance whose original header ``header`` reads and whose patient ID is ``original_id``."""
    policy = compile_policy(config.options)
    return Instance(
        policy=policy,
        keyring=config.keyring,
        date_offset=config.keyring.date_offset_days(original_id),
        identifiers=gather(policy, header),
    )
