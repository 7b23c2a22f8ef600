"""Private attributes kept under the Retain Safe Private Option (PS3.15 E.3.10).

Each entry is (private creator, element byte, meaning): acquisition physics that analysis needs and that
identifies nobody. Anything else private is removed, as the basic profile requires.
"""

from __future__ import annotations

SAFE_PRIVATE: frozenset[tuple[str, int]] = frozenset(
    {
        ("SIEMENS CSA HEADER", 0x08),  # CSA Image Header Type
        ("SIEMENS MR HEADER", 0x0C),  # B_value
        ("SIEMENS MR HEADER", 0x0E),  # DiffusionGradientDirection
        ("SIEMENS MR HEADER", 0x27),  # B_matrix
        ("GEMS_PARM_01", 0x39),  # slop_int_6 (b-value)
        ("GEMS_ACQU_01", 0x8C),  # diffusion direction
        ("Philips Imaging DD 001", 0x03),  # diffusion b-factor
        ("Philips MR Imaging DD 001", 0x03),  # diffusion b-factor
    }
)
