"""A file kept after cleaning says so: the ingest report and the snapshot manifest name each cleaned
attribute and the original attribute its identifier came from, never the identifier itself."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from cleanroom.api import DeidentificationMethod
from cleanroom.deid import DeidConfig, Keyring
from cleanroom.ingest import DirectorySink, run
from cleanroom.snapshots import build_manifest
from cleanroom.sources import DirectoryReader
from tests import phi_corpus


def test_report_and_manifest_name_each_cleaned_attribute(tmp_path: Path) -> None:
    corpus = phi_corpus.build(tmp_path / "in")
    reader = DirectoryReader(str(tmp_path / "in"))
    config = DeidConfig(DeidentificationMethod.ANONYMIZE, Keyring.random())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run(reader, reader.items(), config, DirectorySink(str(tmp_path / "out")), workers=1)
    kept = {entry["item"]: entry for entry in result.report()["kept"]}
    assert kept["ct-kept-attribute.dcm"]["cleaned"] == [
        {"attribute": "ConvolutionKernel", "identifier": "PatientName"}
    ]
    assert "cleaned" not in kept["ct-1.dcm"]  # nothing beyond the profile's own actions
    manifest = build_manifest(
        dataset="d",
        files=result.files,
        source={},
        method="Anonymize",
        options=[],
        key_id="k",
        quarantine=result.quarantine_report(),
        created_at="2026-01-01T00:00:00Z",
    )
    path = kept["ct-kept-attribute.dcm"]["path"]
    entry = next(f for f in manifest["files"] if f["path"] == path)
    assert entry["cleaned"] == [{"attribute": "ConvolutionKernel", "identifier": "PatientName"}]
    text = json.dumps(manifest) + json.dumps(result.report())
    assert not any(token in text for token in phi_corpus.TOKENS)
    assert len(corpus) == len(result.files) + len(result.quarantined)
