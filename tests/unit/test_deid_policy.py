"""One compiled policy decides for both codecs: what each element's fate is, which original values are
identifiers, what the markers say; the codecs test no option themselves."""

from __future__ import annotations

import ast
from pathlib import Path

from cleanroom.api import DeidentificationOption
from cleanroom.deid import compile_policy
from cleanroom.deid.policy import Inside, Operation, expected_pixel_bytes

Opt = DeidentificationOption
DEID = Path(__file__).resolve().parents[2] / "operator/cleanroom/deid"
REFERENCED_STUDY_SEQUENCE, ACQUISITION_DATE = 0x00081110, 0x00080022
STUDY_INSTANCE_UID, OVERLAY_DATA, OVERLAY_COMMENTS = 0x0020000D, 0x60023000, 0x60024000


def test_policy_is_compiled_once_per_set_of_options() -> None:
    assert compile_policy(frozenset({Opt.CLEAN_GRAPHICS})) is compile_policy(frozenset({Opt.CLEAN_GRAPHICS}))


def test_an_x_z_sequence_is_emptied_at_the_top_and_removed_when_nested() -> None:
    policy = compile_policy(frozenset())
    assert policy.decide(REFERENCED_STUDY_SEQUENCE, "SQ").operation is Operation.EMPTY
    assert policy.decide(REFERENCED_STUDY_SEQUENCE, "SQ", nested=True).operation is Operation.REMOVE


def test_dates_follow_the_longitudinal_options() -> None:
    def fate(*options: DeidentificationOption) -> Operation:
        return compile_policy(frozenset(options)).decide(ACQUISITION_DATE, "DA").operation

    assert fate() is Operation.EMPTY
    assert fate(Opt.RETAIN_LONGITUDINAL_FULL_DATES) is Operation.KEEP
    assert fate(Opt.RETAIN_LONGITUDINAL_MODIFIED_DATES) is Operation.CLEAN
    assert compile_policy(frozenset({Opt.RETAIN_LONGITUDINAL_MODIFIED_DATES})).shifts_dates("DA")


def test_uids_are_remapped_unless_retained() -> None:
    assert compile_policy(frozenset()).decide(STUDY_INSTANCE_UID, "UI").operation is Operation.UID
    assert not compile_policy(frozenset()).retain_uids
    assert (
        compile_policy(frozenset({Opt.RETAIN_UIDS})).decide(STUDY_INSTANCE_UID, "UI").operation
        is Operation.KEEP
    )


def test_overlay_data_removes_its_group_and_clean_graphics_keeps_the_bitmap() -> None:
    basic = compile_policy(frozenset()).decide(OVERLAY_DATA, "OW")
    assert basic.operation is Operation.REMOVE and basic.removes_group
    graphics = compile_policy(frozenset({Opt.CLEAN_GRAPHICS}))
    assert graphics.decide(OVERLAY_DATA, "OW").operation is Operation.KEEP  # nothing to scrub in a bitmap
    assert graphics.decide(OVERLAY_COMMENTS, "LT").operation is Operation.CLEAN


def test_text_inside_a_dummied_or_cleaned_sequence() -> None:
    policy = compile_policy(frozenset())
    code_meaning = 0x00080104
    assert policy.decide(code_meaning, "LO", Inside.DUMMIED, True).operation is Operation.DUMMY_IF_SET
    assert policy.decide(code_meaning, "LO", Inside.CLEANED, True).operation is Operation.CLEAN
    assert policy.decide(code_meaning, "LO", Inside.PLAIN, True).operation is Operation.KEEP


def test_identifier_tags_come_from_the_data_dictionary() -> None:
    policy = compile_policy(frozenset())
    assert policy.identifier_tags[0x00100010] is True  # PatientName: a PN
    assert policy.identifier_tags[0x00100020] is False  # PatientID
    assert 0x00080080 in policy.context_tags  # InstitutionName
    assert 0x00080080 not in compile_policy(frozenset({Opt.RETAIN_INSTITUTION_IDENTITY})).context_tags


def test_markers_name_the_options() -> None:
    policy = compile_policy(frozenset({Opt.RETAIN_LONGITUDINAL_MODIFIED_DATES}))
    by_tag = {m.tag: m for m in policy.markers}
    assert by_tag[0x00120062].values == ("YES",)
    assert by_tag[0x00280303].values == ("MODIFIED",)
    codes = [item[0].values[0] for item in by_tag[0x00120064].items]
    assert codes == ["113100", "113107"]


def test_expected_pixel_bytes_counts_every_factor() -> None:
    assert expected_pixel_bytes(512, 512, None, 16, None) == 512 * 512 * 2
    assert expected_pixel_bytes(10, 10, 3, 8, 4) == 1200
    assert expected_pixel_bytes(3, 3, 1, 1, None) == 2  # bits rounded up to whole bytes


def test_the_codecs_test_no_option_and_reach_into_no_private_function() -> None:
    for name in ("engine.py", "rewrite.py"):
        tree = ast.parse((DEID / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                assert node.value.id in ("self",) or not node.attr.startswith("_") or node.attr == "_dict", (
                    f"{name} uses {node.value.id}.{node.attr}"
                )
            names = {"DeidentificationOption", "Option"}
            assert not (isinstance(node, ast.Name) and node.id in names), f"{name} tests options itself"
            assert not (isinstance(node, ast.Attribute) and node.attr in names), (
                f"{name} tests options itself"
            )


def test_attributes_the_table_does_not_list_are_cleaned_unless_known_safe() -> None:
    window_explanation, study_update, manufacturer, window_center = (
        0x00281055,
        0x0008041F,
        0x00080070,
        0x00281050,
    )

    def fate(tag: int, vr: str, *options: DeidentificationOption) -> Operation:
        return compile_policy(frozenset(options)).decide(tag, vr).operation

    assert fate(window_explanation, "LO") is Operation.CLEAN
    assert fate(manufacturer, "LO") is Operation.KEEP  # on the safe list
    assert fate(window_center, "DS") is Operation.KEEP  # a number
    assert fate(study_update, "DT") is Operation.EMPTY
    assert fate(study_update, "DT", Opt.RETAIN_LONGITUDINAL_FULL_DATES) is Operation.KEEP
    assert fate(study_update, "DT", Opt.RETAIN_LONGITUDINAL_MODIFIED_DATES) is Operation.CLEAN
