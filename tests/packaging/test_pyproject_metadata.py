"""`pip install -e .` is quiet: setuptools reads our pyproject.toml without a deprecation warning.

Applies pyproject.toml with the installed setuptools (what `pip install -e .` runs, minus the
download of a fresh build environment), recording every warning it raises.
"""

from __future__ import annotations

import tomllib
import warnings

from tests.conftest import PROJECT_ROOT

PYPROJECT = PROJECT_ROOT / "pyproject.toml"


def test_setuptools_reads_the_metadata_without_deprecation_warnings():
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), PYPROJECT)
    messages = [str(w.message).splitlines()[0] for w in caught if "license" in str(w.message).lower()]
    assert messages == [], f"setuptools warns about the license field: {messages}"
    assert dist.metadata.license_expression == "Apache-2.0"


def test_the_build_backend_is_new_enough_for_an_spdx_license_string():
    data = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    assert isinstance(data["project"]["license"], str)  # the TOML-table form is the deprecated one
    requires = [req.replace(" ", "") for req in data["build-system"]["requires"] if req.startswith("setuptools")]
    assert requires == ["setuptools>=77"], "an SPDX license string needs setuptools >= 77 in the build environment"
