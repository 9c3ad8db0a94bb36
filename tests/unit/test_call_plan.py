"""How a window's rows are split into calls: by bytes under the receiver's limit, the same way every time."""

from hypothesis import given, settings
from hypothesis import strategies as st

from joiner.sender import ENVELOPE_BYTES, plan_chunks
from streaming_runtime.sidecar import dumps

ROWS = st.lists(
    st.fixed_dictionaries({"customer_id": st.integers(0, 10**6), "note": st.text(max_size=300)}), max_size=200
)


@settings(max_examples=200, deadline=None)
@given(rows=ROWS, max_bytes=st.integers(ENVELOPE_BYTES + 50, ENVELOPE_BYTES + 5_000), max_rows=st.integers(1, 50))
def test_each_call_holds_whole_rows_in_order_under_both_bounds(rows, max_bytes, max_rows):
    chunks = plan_chunks(rows, max_bytes, max_rows)
    assert [index for start, end in chunks for index in range(start, end)] == list(range(len(rows)))
    for start, end in chunks:
        assert end - start <= max_rows
        # a row larger than the limit goes alone; otherwise the call fits, with room for an envelope
        assert end - start == 1 or len(dumps(rows[start:end])) <= max_bytes - ENVELOPE_BYTES
    assert plan_chunks(rows, max_bytes, max_rows) == chunks  # a re-send makes the same calls


def test_a_window_under_the_limit_is_one_call_and_a_burst_is_split_by_bytes():
    # rows of about 110 bytes, as a burst made them: 10,000 of them are over 1 MiB
    rows = [
        {
            "customer_id": n,
            "tenant_id": f"dc:eqix:us:chi1:12:panel-{n:08d}",
            "tenant_kwh_usage": 1034.25,
            "window": "1796136460000",
        }
        for n in range(50_000)
    ]
    assert plan_chunks(rows[:100], 1024 * 1024, 10_000) == [(0, 100)]
    chunks = plan_chunks(rows, 1024 * 1024, 10_000)
    assert len(dumps(rows[:10_000])) > 1024 * 1024 and len(chunks) > 5  # the row count alone would not do
    assert all(len(dumps(rows[start:end])) <= 1024 * 1024 - ENVELOPE_BYTES for start, end in chunks)
