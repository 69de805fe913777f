"""The page benchmark's pure parts: photos, /proc parsing, the time breakdown and its summaries."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from facedemo.tools import bench_page as bp


def test_full_hd_covers_and_crops_to_1920_by_1080_around_the_centre():
    wide = Image.new("RGB", (1280, 853), (10, 20, 30))
    assert bp.full_hd(wide).size == (1920, 1080)
    tall = Image.new("RGB", (600, 900))
    tall.paste((255, 0, 0), (0, 400, 600, 500))  # a red band in the middle survives the crop
    out = bp.full_hd(tall)
    assert out.size == (1920, 1080)
    assert out.getpixel((960, 540))[0] > 200


def test_unique_copies_differ_in_bytes_but_not_in_size(tmp_path: Path):
    source = tmp_path / "a.jpg"
    Image.new("RGB", (64, 48), (120, 120, 120)).save(source)
    one, two = bp.unique_copy(source, tmp_path / "c", 1), bp.unique_copy(source, tmp_path / "c", 2)
    assert one.read_bytes() != two.read_bytes()
    assert Image.open(one).size == Image.open(two).size == (64, 48)


def test_proc_status_reads_memory_in_mib_and_threads():
    text = "Name:\tpython\nVmHWM:\t 2048000 kB\nVmRSS:\t 1024000 kB\nRssAnon:\t  512000 kB\nThreads:\t17\n"
    assert bp.proc_status(text) == {"VmHWM_mb": 2000.0, "VmRSS_mb": 1000.0, "RssAnon_mb": 500.0, "threads": 17}


def test_stat_cpu_ticks_counts_fields_after_the_command_name_whatever_it_holds():
    fields = ["S", "42"] + ["0"] * 9 + ["150", "25"] + ["0"] * 30
    text = "1234 (Web Content (x)) " + " ".join(fields)
    assert bp.stat_cpu_ticks(text) == (42, 175)


def test_descendants_are_children_of_children_and_nothing_else():
    parents = {2: 1, 3: 2, 4: 3, 5: 1, 6: 99}
    assert bp.descendants(parents, 2) == {3, 4}
    assert bp.descendants(parents, 1) == {2, 3, 4, 5}


def _trial(click=100.0, app="a", round_number=0, photo="p", size="1920x1080", analysis=200.0, server=True):
    """A trial whose phases are known: join at +10, server 20..320 (total 300, of which encode 120),
    completed at +330, images fetched 340..360, loaded at 370, painted at 400."""
    raw = {
        "click": click, "join": click + 10, "epoch_offset": 1_000_000.0,
        "msgs": [{"t": click + 12, "msg": "process_starts"}, {"t": click + 330, "msg": "process_completed"}],
        "images": [{"start": click + 340, "end": click + 355}, {"start": click + 341, "end": click + 360}],
        "watch": {"loaded": click + 370, "painted": click + 400},
        "trace": {"timestamp": (1_000_000.0 + click + 20) / 1000, "queue_wait_ms": 1.0, "preprocess_ms": 5.0,
                  "fn_call_ms": 170.0, "postprocess_ms": 125.0, "postprocess_save_pil_to_cache_ms": 120.0,
                  "total_ms": 300.0} if server else None,
    }
    phases = bp.breakdown(raw)
    return {"app": app, "round": round_number, "photo": photo, "size": size, "faces": 3, "upload_ms": 30.0,
            "analysis_ms": analysis, "in_process": {"analysis_ms": analysis, "handler_ms": 150.0},
            "phases": phases, "images": [{"bytes": 1000}, {"bytes": 2000}], "cpu_ms": {"server": 400, "browser": 300}}


def test_breakdown_splits_the_click_to_result_time_into_phases_that_add_up():
    phases = _trial()["phases"]
    assert phases["click_to_result"] == 400
    assert phases["page_to_join"] == 10 and phases["join_to_server"] == 10
    assert phases["server_handler"] == 170 and phases["server_encode_images"] == 120
    assert phases["server_postprocess_other"] == 5
    assert phases["server_to_page"] == 10  # completed (330) - server end (20 + 300)
    assert phases["page_update"] == 10 and phases["image_transfer"] == 20
    assert phases["image_load_event"] == 10 and phases["decode_and_paint"] == 30
    assert sum(phases[p] for p in bp.PHASES) == pytest.approx(phases["click_to_result"])


def test_breakdown_without_a_server_trace_leaves_the_server_phases_unknown():
    phases = _trial(server=False)["phases"]
    assert phases["click_to_result"] == 400
    assert phases["server_handler"] is None and phases["join_to_server"] is None
    assert phases["image_transfer"] == 20


def test_summaries_give_medians_per_photo_and_ratios_to_the_analysis():
    trials = [_trial(click=c, round_number=n, analysis=a) for n, (c, a) in enumerate([(0, 200), (1000, 100), (2000, 400)])]
    trials.append({**_trial(round_number=3), "error": "timeout"})
    del trials[-1]["phases"]
    row = bp.summarise(trials)["p"]
    assert row["trials"] == 3 and row["errors"] == 1
    assert row["click_to_result_ms"] == 400 and row["analysis_ms"] == 200
    assert row["ratio"] == 2.0  # the median of 2, 4 and 1
    assert row["phases_ms"]["server_encode_images"] == 120 and row["image_bytes"] == 3000
    assert bp.overall(trials)["ratio_1080p"] == 2.0


def test_versus_compares_the_same_round_and_photo_in_each_app():
    first = [_trial(app="a", round_number=n) for n in range(3)]
    second = []
    for n in range(3):
        t = _trial(app="b", round_number=n)
        t["phases"] = {**t["phases"], "click_to_result": 300.0}
        second.append(t)
    result = bp.versus(first + second, ["a", "b"])
    assert result["b"] == {"vs": "a", "pairs": 3, "click_to_result_ratio": 0.75, "click_to_result_ratio_1080p": 0.75}


def test_app_specs_name_a_checkout_and_settings(tmp_path: Path):
    assert bp.AppSpec.parse(".") == bp.AppSpec(".", None, ())
    assert bp.AppSpec.parse(".,A=1,B=x=y").env == (("A", "1"), ("B", "x=y"))
    (tmp_path / "app.py").write_text("")
    assert bp.AppSpec.parse(str(tmp_path)).root == tmp_path.resolve()
    with pytest.raises(ValueError, match="NAME=VALUE"):
        bp.AppSpec.parse(".,A")
    with pytest.raises(ValueError, match="no app.py"):
        bp.AppSpec.parse(str(tmp_path / "missing"))
