"""The page in a real browser (Debian's chromium driven by Playwright) against `python app.py`.

With FACEDEMO_SCREENSHOTS=DIR set, each tab is also saved as DIR/<tab>.png (the README's pictures).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from PIL import Image
from playwright.sync_api import expect

from facedemo.app.examples import write as write_examples
from facedemo.tools.launch import CHROMIUM, CHROMIUM_ARGS

TABS = ["Photo", "Album", "Enrol", "My data", "How it works"]
# Long enough for a model call on 2 busy cores; a healthy run needs a fraction of it.
WAIT_MS = 60_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.e2e,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"Debian's chromium is not installed at {CHROMIUM} (apt-get install -y chromium)"
    ),
]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, app):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    expect.set_options(timeout=WAIT_MS)
    page.goto(app.url)
    page.wait_for_selector("#analyse")
    yield page
    context.close()


PHONE = {"width": 390, "height": 844}


@pytest.fixture
def phone(browser, app):
    """The page at a phone's size, 390 x 844 CSS pixels, with touch."""
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(app.url)
    page.wait_for_selector("#analyse")
    yield page
    context.close()


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> dict[str, str]:
    return {p.stem: str(p) for p in write_examples(tmp_path_factory.mktemp("examples"))}


def snapshot(page, name: str) -> None:
    folder = os.environ.get("FACEDEMO_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def fill(page, elem_id: str, text: str) -> None:
    page.locator(f"#{elem_id}").get_by_role("textbox").fill(text)


def table_rows(page, elem_id: str = "faces-table") -> list[list[str]]:
    """The cells of a gr.Dataframe as text. (Its <table> only measures; the rows shown are ARIA grid rows.)"""
    rows = page.locator(f"#{elem_id} [role=row][data-index]")
    return [[c.strip() for c in rows.nth(i).locator("[role=gridcell]").all_text_contents()] for i in range(rows.count())]


def wait_for_faces(page, count: int) -> list[list[str]]:
    """Wait until the summary and the table show `count` faces; the table's rows."""
    expect(page.locator("#summary")).to_contain_text(f"{count} face{'s' if count != 1 else ''} found")
    expect(page.locator("#faces-table [role=row][data-index]")).to_have_count(count)
    return table_rows(page)


def analyse(page, photo: str, faces: int) -> list[list[str]]:
    """Upload `photo`, click the button and wait for the table of its `faces` faces; the rows."""
    page.locator("#photo input[type=file]").set_input_files(photo)
    page.wait_for_selector("#photo img")
    page.click("#analyse")
    return wait_for_faces(page, faces)


def test_upload_a_photo_click_and_read_the_table(page, examples):
    rows = analyse(page, examples["astronaut"], faces=1)
    assert rows[0][:2] == ["1", "Unknown"] and rows[0][5] == "1.000"
    assert page.locator("#detection-image img").is_visible()
    assert page.locator("#recognition-image img").is_visible()
    assert "1 face found" in page.locator("#summary").inner_text()


def test_clicking_the_group_example_shows_both_faces(page):
    page.locator("#examples button").filter(has_text="Group").click()
    assert [row[0] for row in wait_for_faces(page, 2)] == ["1", "2"]


@contextlib.contextmanager
def enrolled_through_the_api(app, name: str, photo: str):
    """`name` enrolled from `photo` through the named API: the receipt; erased afterwards."""
    client = Client(app.url, verbose=False)
    receipt = client.predict(name, [handle_file(photo)], True, api_name="/enroll")
    try:
        yield receipt
    finally:
        client.predict(receipt["subject_id"], receipt["deletion_token"], api_name="/forget")
        client.close()


def open_my_data(page, receipt: dict) -> None:
    open_tab(page, "My data")
    fill(page, "my-subject", receipt["subject_id"])
    fill(page, "my-token", receipt["deletion_token"])


def test_moving_the_threshold_re_decides_in_the_page(page, app, examples):
    with enrolled_through_the_api(app, "Grace Hopper", examples["grace_hopper"]):
        analyse(page, examples["grace_hopper"], faces=1)
        identity = page.locator("#faces-table [role=gridcell][data-col='1']")
        expect(identity).to_have_text(["Grace Hopper"])
        threshold = page.locator("#threshold input[type=number]")
        threshold.fill("0")
        threshold.press("Enter")
        expect(identity).to_have_text(["Unknown"])
        expect(page.locator("#summary")).to_contain_text("at threshold 0.00")


def test_a_file_that_is_not_an_image_is_explained_by_the_button_and_nothing_covers_the_inputs(page, tmp_path):
    fake = tmp_path / "holiday.png"
    fake.write_bytes(b"these are not pixels")
    page.locator("#photo input[type=file]").set_input_files(str(fake))
    page.wait_for_selector("#photo img")  # uploaded (the browser cannot draw it)
    page.click("#analyse")
    expect(page.locator("#summary")).to_contain_text("Not an image format we can read")
    assert page.locator(".toast-body").count() == 0  # no message that vanishes after a few seconds
    assert page.locator("#summary").bounding_box()["y"] < 900  # on the first screen, under the button
    assert page.locator("#photo img").is_visible()  # the input is still there to replace
    assert "Traceback" not in page.content()


def test_a_refusal_stays_until_the_next_analysis_replaces_it(page, tmp_path, examples):
    fake = tmp_path / "notes.jpg"
    fake.write_bytes(b"not a photo")
    page.locator("#photo input[type=file]").set_input_files(str(fake))
    page.wait_for_selector("#photo img")
    page.click("#analyse")
    expect(page.locator("#summary")).to_contain_text("Not an image format")
    analyse(page, examples["astronaut"], faces=1)
    expect(page.locator("#summary")).not_to_contain_text("Not an image format")


def test_on_a_phone_every_tab_is_in_the_tab_bar(phone):
    tabs = phone.get_by_role("tab")
    expect(tabs).to_have_count(len(TABS))
    assert [t.strip() for t in tabs.all_inner_texts()] == TABS
    assert phone.locator(".overflow-dropdown button").count() == 0  # nothing hidden behind "..."


def test_on_a_phone_the_upload_box_is_on_the_first_screen(phone):
    assert phone.locator("#photo").bounding_box()["y"] < PHONE["height"] - 150


def test_on_a_phone_who_is_where_is_readable_without_scrolling_sideways(phone, examples):
    rows = analyse(phone, examples["group"], faces=2)
    assert [row[1] for row in rows] == ["Unknown", "Unknown"]
    for cell in phone.locator("#faces-table [role=gridcell][data-col='1']").all():
        box = cell.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    snapshot(phone, "phone-photo")


def test_enrol_by_clicking_ones_face_in_a_group_photo(page, app, examples):
    from facedemo.api import detect_faces

    left = detect_faces(examples["group"])[0]
    width, height = Image.open(examples["group"]).size
    open_tab(page, "Enrol")
    fill(page, "enrol-name", "Eileen Collins")
    page.locator("#enrol-consent input[type=checkbox]").check()
    page.locator("#group-enrol").get_by_text("From a group photo").click()
    page.locator("#group-photo input[type=file]").set_input_files(examples["group"])
    shown = page.locator("#group-photo img")
    expect(shown).to_be_visible()
    box = shown.bounding_box()
    x, y = (left.box[0] + left.box[2]) / 2, (left.box[1] + left.box[3]) / 2
    shown.click(position={"x": x / width * box["width"], "y": y / height * box["height"]})
    expect(page.locator("#group-chosen")).to_contain_text("Chosen: the face at")
    page.click("#group-enrol-button")
    expect(page.locator("#receipt")).to_contain_text("Enrolled")
    expect(page.locator("#group-note")).to_contain_text("Enrolled")  # by the button too
    expect(page.locator("#group-chosen")).to_contain_text("No face chosen yet")
    assert table_rows(page, "verdicts")[0][2:] == ["yes", "accepted (face 1 of 2; the other faces were not used)"]
    subject_id = page.locator("#receipt-subject").get_by_role("textbox").input_value()
    token = page.locator("#receipt-token").get_by_role("textbox").input_value()
    client = Client(app.url, verbose=False)
    client.predict(subject_id, token, api_name="/forget")
    client.close()


def enrol_in_page(page, name: str, photos: list[str], consent: bool = True) -> None:
    open_tab(page, "Enrol")
    fill(page, "enrol-name", name)
    page.locator("#enrol-photos input[type=file]").set_input_files(photos)
    expect(page.locator("#enrol-photos")).to_contain_text(Path(photos[-1]).name)
    if consent:
        page.locator("#enrol-consent input[type=checkbox]").check()
    page.click("#enrol-button")


def test_enrol_then_delete_through_the_page(page, examples):
    enrol_in_page(page, "Eileen Collins", [examples["astronaut"]])
    page.wait_for_function("document.querySelector('#receipt').innerText.includes('Enrolled')")
    subject_id = page.locator("#receipt-subject").get_by_role("textbox").input_value()
    token = page.locator("#receipt-token").get_by_role("textbox").input_value()
    assert subject_id and len(token) >= 20
    # The page's outputs update one after the other: each is waited for, none read at once.
    expect(page.locator("#verdicts [role=row][data-index]")).to_have_count(1)
    assert table_rows(page, "verdicts")[0][2:] == ["yes", "accepted"]
    # The form is cleared for the next person: no name, no photos, consent unticked.
    expect(page.locator("#enrol-name").get_by_role("textbox")).to_have_value("")
    expect(page.locator("#enrol-photos")).not_to_contain_text("astronaut")
    expect(page.locator("#enrol-consent input[type=checkbox]")).not_to_be_checked()
    snapshot(page, "enrol")

    open_tab(page, "Photo")
    analyse(page, examples["group"], faces=2)
    identities = page.locator("#faces-table [role=gridcell][data-col='1']")
    expect(identities).to_have_text(["Eileen Collins", "Unknown"])
    for result in ("#faces-table", "#summary"):  # the key to her data is no recognition result
        assert subject_id not in page.locator(result).inner_text()
    snapshot(page, "detect-vs-recognize")

    open_tab(page, "My data")
    fill(page, "my-subject", subject_id)
    fill(page, "my-token", token)
    page.click("#describe-button")
    page.locator("#stored").get_by_text("key_id").wait_for()
    page.click("#forget-button")
    expect(page.locator("#forget-confirm-row")).to_be_visible()
    page.click("#forget-confirm")
    expect(page.locator("#erasure-note")).to_contain_text("Your data was deleted")
    expect(page.locator("#forget-confirm-row")).to_be_hidden()
    expect(page.locator("#stored")).not_to_contain_text("key_id")  # what was shown as stored is cleared
    expect(page.locator("#erasure")).to_contain_text("matched_subject")
    snapshot(page, "my-data")

    # The result on the first tab is decided again at the deletion: it names her no more.
    open_tab(page, "Photo")
    expect(identities).to_have_text(["Unknown", "Unknown"])
    threshold = page.locator("#threshold input[type=number]")
    threshold.fill("0.5")
    threshold.press("Enter")
    expect(identities).to_have_text(["Unknown", "Unknown"])
    expect(page.locator("#summary")).not_to_contain_text("1 identified")
    # A new analysis of the photo (added again: each upload is deleted once used) names nobody either.
    analyse(page, examples["group"], faces=2)
    expect(page.locator("#summary")).to_contain_text("nobody is enrolled")


def test_cancelling_the_deletion_deletes_nothing(page, app, examples):
    with enrolled_through_the_api(app, "Grace Hopper", examples["grace_hopper"]) as receipt:
        open_my_data(page, receipt)
        page.click("#forget-button")
        page.click("#forget-cancel")
        expect(page.locator("#forget-confirm-row")).to_be_hidden()
        page.click("#describe-button")
        page.locator("#stored").get_by_text("key_id").wait_for()


def test_a_refused_enrolment_leaves_no_photo_to_slip_into_the_next_one(page, examples):
    enrol_in_page(page, "Grace Hopper", [examples["grace_hopper"]], consent=False)
    expect(page.locator("#receipt")).to_contain_text("Not enrolled")
    expect(page.locator("#receipt")).to_contain_text("consent")
    expect(page.locator("#enrol-photos")).not_to_contain_text("grace_hopper")
    # The next person enrols under another name without adding photos: nothing of Grace Hopper goes with it.
    fill(page, "enrol-name", "Peggy Whitson")
    page.locator("#enrol-consent input[type=checkbox]").check()
    page.click("#enrol-button")
    expect(page.locator("#receipt")).to_contain_text(re.compile("add at least one photo", re.IGNORECASE))
    assert page.locator("#receipt-subject").get_by_role("textbox").input_value() == ""


def test_export_downloads_in_the_browser_from_the_response(page, app, examples):
    with enrolled_through_the_api(app, "Grace Hopper", examples["grace_hopper"]) as receipt:
        open_my_data(page, receipt)
        with page.expect_download() as download:
            page.click("#export-button")
        data = json.loads(Path(download.value.path()).read_text(encoding="utf-8"))
        assert data["name"] == "Grace Hopper" and data["subject_id"] == receipt["subject_id"]
        assert download.value.url.startswith("blob:")  # made in the page; no server URL to fetch again
        expect(page.locator("#my-data-note")).to_contain_text("kept no copy")


def test_how_it_works_says_whether_the_audit_log_verifies(page):
    open_tab(page, "How it works")
    expect(page.locator("#audit")).to_contain_text("Audit log verifies: yes.")
    assert "MTCNN" in page.content()
    snapshot(page, "how-it-works")


def test_an_album_is_analysed_and_downloaded_anonymised(page, examples, tmp_path):
    import zipfile

    open_tab(page, "Album")
    page.locator("#album-files input[type=file]").set_input_files(
        [examples["group"], examples["astronaut"], examples["grace_hopper"]]
    )
    expect(page.locator("#album-files")).to_contain_text("grace_hopper")
    page.click("#album-button")
    expect(page.locator("#album-summary")).to_contain_text("3 photos analysed")
    expect(page.locator("#album-sheet img")).to_have_count(3)
    expect(page.locator("#album-files")).not_to_contain_text("grace_hopper")  # the uploads are gone
    page.click("#album-download-button")
    expect(page.locator("#album-ready")).to_contain_text("4 faces hidden")
    with page.expect_download() as download:
        page.locator("#album-zip [data-testid=download-link]").click()
    with zipfile.ZipFile(download.value.path()) as archive:
        names = archive.namelist()
    assert "manifest.json" in names and len(names) == 4
    snapshot(page, "album")
