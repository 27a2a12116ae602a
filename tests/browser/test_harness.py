"""The checker itself: axe-core in this Chromium does report violations, and no Chromium fails."""

from __future__ import annotations

import pytest

from tests.browser.conftest import require_chromium

pytestmark = pytest.mark.browser

BROKEN = """<!doctype html><html lang="en"><head><title>Broken on purpose</title></head>
<body><main><h1>Form</h1>
<p style="color:#aaaaaa;background:#ffffff">Low contrast text</p>
<input type="text" name="unlabelled">
</main></body></html>"""


def test_axe_reports_violations_with_their_rule_and_nodes(page, a11y):
    page.set_content(BROKEN)

    found = a11y.check(page, "harness", screenshot=False)

    assert {v.id for v in found} == {"color-contrast", "label"}
    by_id = {v.id: v for v in found}
    assert by_id["label"].nodes == ["input"]
    assert by_id["color-contrast"].nodes == ["p"]
    with pytest.raises(
        AssertionError,
        match=r"\[harness\] label \(critical\): Form elements must have labels -> input",
    ):
        a11y.assert_clean()


def test_a_missing_chromium_fails_with_the_install_command(tmp_path):
    with pytest.raises(pytest.fail.Exception, match=r"apt-get install -y chromium"):
        require_chromium(str(tmp_path / "no-chromium-here"))
