"""The docs site's sources (docs/docsite/): what antsibull-docs reads, and what the pages claim.

`make docs` (scripts/docs.sh) builds the site with warnings as errors; these checks are the
ones a build cannot make: every page is listed, the links agree with galaxy.yml, and every
`release_*` name a page or the README mentions is an input of the release role or a name the
run publishes, so the docs never invent an option.
"""

from __future__ import annotations

import pathlib
import re

import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
DOCSITE = REPO / "docs" / "docsite"
LABEL_PREFIX = "ansible_collections.bluegreen.haproxy.docsite."
# Names a run publishes (set_stats artifacts, status.yml's fleet report), not inputs.
PUBLISHED = {"release_outcome", "release_target", "release_summary", "release_switch", "release_partial",
             "release_fleet", "release_status", "release_drain"}
# Named on purpose although no input: the typo in the example of INIT's refusal, and a former
# internal name a run refuses.
NOT_INPUTS = {"release_watch_secnds", "release_failures"}
# The keys antsibull-docs' links.yml schema knows (antsibull_docs/schemas/collection_links.py).
LINKS_KEYS = {"edit_on_github", "extra_links", "communication"}
COMMUNICATION_KEYS = {"forums": {"topic", "url"}, "matrix_rooms": {"topic", "room"},
                      "irc_channels": {"topic", "network", "channel"}, "mailing_lists": {"topic", "url", "subscribe"}}


def release_inputs():
    specs = yaml.safe_load((REPO / "roles" / "release" / "meta" / "argument_specs.yml").read_text())
    return set(specs["argument_specs"]["init"]["options"])


def test_every_page_is_listed_once_and_has_its_label():
    sections = yaml.safe_load((DOCSITE / "extra-docs.yml").read_text())["sections"]
    listed = [entry for section in sections for entry in section["toctree"]]
    pages = sorted(path.stem for path in (DOCSITE / "rst").glob("*.rst"))
    assert sorted(listed) == pages
    for page in pages:
        first = (DOCSITE / "rst" / (page + ".rst")).read_text().splitlines()[0]
        assert first == ".. _%s%s:" % (LABEL_PREFIX, page)


def test_links_follow_the_schema_and_galaxy_yml():
    links = yaml.safe_load((DOCSITE / "links.yml").read_text())
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    assert set(links) <= LINKS_KEYS
    for link in links.get("extra_links", []):
        assert set(link) == {"description", "url"} and link["url"].startswith("https://")
    for kind, entries in links.get("communication", {}).items():
        for entry in entries:
            assert set(entry) <= COMMUNICATION_KEYS[kind] and {"topic"} <= set(entry)
    # Edit on GitHub exactly when galaxy.yml names the repository it edits.
    repository = galaxy.get("repository") or ""
    match = re.match(r"https://github\.com/([^/]+/[^/]+?)(?:\.git)?/?$", repository)
    if match:
        assert links["edit_on_github"]["repository"] == match.group(1)
    else:
        assert "edit_on_github" not in links, "edit_on_github needs galaxy.yml's repository"


def test_every_release_name_in_the_docs_is_an_input_or_published():
    modules = {path.stem for path in (REPO / "plugins" / "modules").glob("release_*.py")}
    known = release_inputs() | PUBLISHED | NOT_INPUTS | modules
    texts = {path.relative_to(REPO): path.read_text() for path in (DOCSITE / "rst").glob("*.rst")}
    texts[pathlib.Path("README.md")] = (REPO / "README.md").read_text()
    unknown = {}
    for path, text in texts.items():
        for name in re.findall(r"(?<![\w./-])(release_[a-z_]+)", text):
            if name in known or name.endswith("_"):  # release_* as a prefix
                continue
            unknown.setdefault(str(path), set()).add(name)
    assert unknown == {}


def test_readme_links_the_docs_site_pages_and_the_awx_examples():
    readme = (REPO / "README.md").read_text()
    for page in (DOCSITE / "rst").glob("*.rst"):
        assert "docs/docsite/rst/%s" % page.name in readme
    for example in ("examples/awx/controller.yml", "examples/awx/survey-cutover.json"):
        assert example in readme
    assert "ansible-galaxy collection install bluegreen.haproxy\n" not in readme
