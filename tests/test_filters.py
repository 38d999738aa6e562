"""One filter shape: ``SearchFilters``, its JSON form, and the CLI options that build it."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from skysearch.cli.search import build_filters
from skysearch.retrieval.store.filters import SearchFilters

from skysearch.errors import UsageError

UTC = timezone.utc


def test_json_form_round_trips_every_field():
    filters = SearchFilters(
        start=datetime(2017, 9, 5, tzinfo=UTC),
        end=datetime(2017, 9, 8, 12, tzinfo=UTC),
        months=(9, 8),
        hours=(0, 1, 23),
        day_of_year=(335, 59),
        channels=("ir", "wv"),
        satellites=("goes-east",),
        exclude_around=datetime(2017, 9, 7, 0, 45, tzinfo=UTC),
        exclude_window=timedelta(hours=12),
        datasets=("aid-20",),
        labels=("River", "Pond"),
        bbox=(170.0, 50.0, -170.0, 40.0),  # crosses the antimeridian; latitudes either order
        events=("198702",),
        min_class=4,
        max_pressure=980.0,
        k=7,
        one_per_day=True,
    )
    data = json.loads(json.dumps(filters.to_dict()))
    assert data["exclude_window_s"] == 12 * 3600 and data["bbox"] == [170.0, 40.0, -170.0, 50.0]
    assert SearchFilters.from_dict(data) == filters
    assert SearchFilters.from_dict({}) == SearchFilters()
    assert SearchFilters.from_dict({"k": 3}, model_id="clip-1").model_id == "clip-1"


def test_json_form_refuses_unknown_fields():
    with pytest.raises(UsageError, match=r"unknown filter fields \['exclude_window'\]"):
        SearchFilters.from_dict({"exclude_window": 60})


def test_cli_scene_options_build_the_same_filters():
    """`search text|image` options go through the one CLI builder."""
    built = build_filters(
        between="2017-09-05..2017-09-08",
        datasets="aid-20, rsscn7,",
        labels="River",
        bbox="10,50,11,49",
        k=3,
    )
    assert built == SearchFilters(
        start=datetime(2017, 9, 5, tzinfo=UTC),
        end=datetime(2017, 9, 9, tzinfo=UTC) - timedelta(microseconds=1),  # the whole 8th
        datasets=("aid-20", "rsscn7"),
        labels=("River",),
        bbox=(10, 49, 11, 50),
        k=3,
    )
    with pytest.raises(UsageError, match="four numbers"):
        build_filters(bbox="10,50,11")


def test_cli_event_and_track_options_build_the_same_filters():
    built = build_filters(events="198702, 198799", min_class=4, max_pressure=975, k=5)
    assert built == SearchFilters(events=("198702", "198799"), min_class=4, max_pressure=975, k=5)
    with pytest.raises(UsageError, match="min_class must be a JMA class in 2..6"):
        build_filters(min_class=7)
    with pytest.raises(UsageError, match="max_pressure must be in 800..1100 hPa"):
        build_filters(max_pressure=50)


def test_python_callers_get_usage_errors_for_wrong_types_and_one_name_is_one_name():
    """An application passing a string where a list goes got each letter as a name ('d', 'R',
    ...); wrong types were bare TypeErrors from deep inside."""
    import numpy as np
    from skysearch.retrieval.search import ClipQuery, FrameQuery, SearchOptions

    assert SearchFilters(labels="dRiverLake", channels="ir").labels == ("dRiverLake",)
    assert SearchFilters(channels="ir").channels == ("ir",)
    assert SearchFilters(months=7, hours="6").months == (7,)
    assert SearchFilters(k=np.int64(5)).k == 5
    typed = SearchFilters(min_class="4", max_pressure=np.float64(950), day_of_year=("10", 20))
    assert (typed.min_class, typed.max_pressure, typed.day_of_year) == (4, 950.0, (10, 20))
    assert ClipQuery(frames="/data/last-6-hours").frames == (Path("/data/last-6-hours"),)
    for make, said in (
        (lambda: SearchFilters(k="5"), "k must be a whole number, got '5'"),
        (lambda: SearchFilters(k=2.5), "k must be a whole number, got 2.5"),
        (lambda: SearchFilters(exclude_window=3600), "exclude_window must be a timedelta"),
        (lambda: SearchFilters(labels=5), "labels must be a list of names, got 5"),
        (lambda: SearchFilters(months=[2.5]), "months must be whole numbers in 1..12"),
        (lambda: SearchOptions(rerank="5"), "rerank must be a whole number, got '5'"),
        (lambda: FrameQuery(at="2017-09-07", channel=["ir"]), "channel must be one name"),
        (lambda: ClipQuery(at="2017-09-07", channels=[1]), "channels must be names, got [1]"),
        (lambda: ClipQuery(at="2017-09-07", length="4"), "length must be a whole number"),
        (lambda: ClipQuery(pixels=[[1]]), "query pixels must be a numpy array, got list"),
        (lambda: ClipQuery(at="2017-09-07", tolerance_minutes=-1), "in 0..720, got -1"),
        (lambda: FrameQuery(at="2017-09-07", tolerance_minutes="15"), "must be a whole number"),
        (lambda: FrameQuery(pixels=[[1]]), "query frame pixels must be a numpy array"),
        (lambda: SearchFilters(day_of_year=(1,)), "day_of_year is two whole numbers"),
        (lambda: SearchFilters(day_of_year=100), "day_of_year is two whole numbers"),
        (lambda: SearchFilters(min_class="x"), "min_class must be a JMA class in 2..6, got 'x'"),
        (lambda: SearchFilters(min_class=4.7), "min_class must be a JMA class in 2..6, got 4.7"),
        (lambda: SearchFilters(max_pressure="low"), "max_pressure must be in 800..1100 hPa"),
        (lambda: SearchFilters(one_per_day="no"), "one_per_day must be True or False"),
        (lambda: SearchFilters(start=1504745100), "cannot read time 1504745100: a time is an"),
        (lambda: SearchFilters.from_dict({"exclude_window_s": "x"}), "a number of seconds"),
        (lambda: SearchFilters.from_dict({"day_of_year": 5}), "day_of_year is two whole"),
    ):
        with pytest.raises(UsageError) as caught:
            make()
        assert said in str(caught.value)


def test_http_scene_filters_take_every_name_the_cli_takes():
    """Folder names with a space or an accent were labels the CLI filtered on and every HTTP
    filter refused (422); satellites and channels keep their folder-name pattern."""
    from pydantic import ValidationError
    from skysearch.retrieval.service.wire import SceneFilters

    names = ["Dense Residential", "Résidence", "aid-20", "x" * 255]
    body = SceneFilters.model_validate({"labels": names, "datasets": names})
    assert body.to_filters().labels == body.to_filters().datasets == tuple(names)
    for bad in ("", "a\nb", "tab\there", "\x00", "x" * 256):
        with pytest.raises(ValidationError):
            SceneFilters.model_validate({"labels": [bad]})
    with pytest.raises(ValidationError):
        SceneFilters.model_validate({"satellites": ["goes east"]})


def test_bbox_help_says_the_latitudes_may_come_in_either_order():
    """S > N is read as N,S (one band between two parallels) while W > E crosses the
    antimeridian: the help and the search guide say so."""
    from typing import get_args

    from skysearch.cli.search import BboxOption

    help_text = get_args(BboxOption)[1].help
    assert "either order" in help_text and "closed box" in help_text
    guide = (Path(__file__).parents[1] / "docs" / "guides" / "search.md").read_text()
    assert "the two latitudes may come in either order" in " ".join(guide.split())
    assert build_filters(bbox="0,10,20,5").bbox == (0, 5, 20, 10)


@pytest.mark.parametrize("where", ["embedded", ":memory:"])
def test_a_scene_box_is_the_closed_box_of_locations_without_footprint_conditions(where, tmp_path):
    """Scenes have no footprint: their box is the location's alone (the footprint conditions
    read every scene's payload, 48 ms against 0.4 ms at 50k scenes), still closed: edges,
    the antimeridian and the poles are inside."""
    import uuid

    import numpy as np
    from skysearch.retrieval.store import open_store
    from skysearch.retrieval.store.base import Point

    places = [(10, 45), (11, 51), (10.5, 48), (12, 48), (180, 0), (-180, 0), (179.5, 0),
              (0, 90), (50, 90), (0, -90), (10, 89.9)]  # fmt: skip
    store = open_store(None, str(tmp_path / "store") if where == "embedded" else where)
    store.ensure_collection("scenes", 4, "m")
    ids = [str(uuid.uuid4()) for _ in places]
    store.upsert(
        "scenes",
        [
            Point(i, {"m": np.ones(4, np.float32)}, {"location": {"lon": lon, "lat": lat}})
            for i, (lon, lat) in zip(ids, places, strict=True)
        ],
        vector_name="m",
    )
    bbox = SearchFilters(bbox=(-180, -90, 180, 90)).to_qdrant("scenes")
    assert len(str(bbox).split("key='west'")) == 1  # no footprint condition
    for box, inside in [
        ((10, 45, 11, 51), {0, 1, 2}),
        ((-180, -90, 180, 90), set(range(len(places)))),
        ((179, -1, -179, 1), {4, 5, 6}),
        ((-10, 80, 10, 90), {7, 8, 10}),
    ]:
        hits = store.search(
            "scenes", np.ones(4, np.float32), k=20, filters=SearchFilters(bbox=box), vector_name="m"
        )
        assert {h.id for h in hits} == {ids[i] for i in inside}, box
    store.close()
