"""The overview's charts (issue 20): bars in proportion to their figures, on a round scale;
a suppressed cell draws nothing."""

from __future__ import annotations

from trm_broker.api.console.charts import bar_chart


def test_bars_are_in_proportion_and_suppressed_cells_draw_nothing() -> None:
    chart = bar_chart([("w1", [30, None, 10]), ("w2", [None])], ["a", "b", "c"], stacked=True)
    assert chart.scale_max == 50
    first, second = chart.rows
    widths = [s.width for s in first.segments]
    assert [s.series for s in first.segments] == [0, 2]
    assert widths[0] == 3 * widths[1]
    assert first.segments[1].x == first.segments[0].x + widths[0]  # stacked
    assert [value for _, _, value in first.notes] == [40]
    assert second.segments == ()
    assert second.notes == ()
    assert [value for _, value in chart.ticks] == [0, 10, 20, 30, 40, 50]


def test_grouped_bars_share_a_row_one_per_series() -> None:
    chart = bar_chart([("AT → NG", [12.5, 40.0])], ["median", "p90"], stacked=False)
    median, p90 = chart.rows[0].segments
    assert median.x == p90.x
    assert p90.y == median.y + median.height
    assert p90.width / median.width == 40 / 12.5
    assert [value for _, _, value in chart.rows[0].notes] == [12.5, 40.0]
