"""The HTML page's tables: wide ones wrap to fit the page, run ids link to a tracking server's UI."""

import dataclasses
import re

from demoe.report import html, tables


def parts(page: str) -> list[str]:
    return re.findall(r"<table .*?</table>", page, flags=re.S)


def test_a_wide_table_wraps_into_parts_that_repeat_the_row_labels_and_keep_groups_whole(collection):
    table = tables.per_task_table([r for r in collection.evals if r.bench == "mini-aio"])
    data_columns = len(table.columns) - 2
    assert data_columns > html.MAX_DATA_COLUMNS  # five blur types and their mean, three metrics each
    page = html.render_table(table)
    pieces = parts(page)
    assert len(pieces) >= 2 and page.count("<h3>") == 1
    shown = 0
    for piece in pieces:
        names = re.findall(r'<tr class="names">(.*?)</tr>', piece)[0]
        headers = re.findall(r"<th[^>]*>(.*?)</th>", names)
        assert headers[:2] == ["Model", "Routing"] and len(headers) - 2 <= html.MAX_DATA_COLUMNS
        assert piece.count("<tr>") + piece.count('<tr class="rule">') == len(table.rows)
        groups = re.findall(r'<th colspan="(\d+)">', piece)
        assert all(int(width) == 3 for width in groups)  # a blur type's metrics stay together
        shown += len(headers) - 2
    assert shown == data_columns


def test_a_narrow_table_stays_one_table(collection):
    assert len(parts(html.render_table(tables.routing_table(collection.evals)))) == 1


def test_run_ids_link_to_the_tracking_servers_ui_and_not_for_a_local_store(collection):
    local = html.render_table(tables.runs_table(collection))
    assert "<a href" not in local
    served = dataclasses.replace(collection, ui_url="http://mlflow.lab:5000")
    page = html.render_table(tables.runs_table(served))
    run = collection.evals[0]
    assert f'<a href="http://mlflow.lab:5000/#/experiments/{run.experiment_id}/runs/{run.run_id}">' in page
    assert run.experiment_id and page.count("<a href") == len(collection.evals) + len(collection.finetunes)
