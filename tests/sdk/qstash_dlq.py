"""Upstash's QStash Python SDK (`qstash` on PyPI), pointed at workflow-dlq: its DLQ API —
list (every filter it has, paged), get, delete, delete_many (3.4.0 has no retry). Driven by
tests/it/sdk_compat.rs, which seeds the DLQ (event n: url …/workflow/{n%4}, URL group
group-{n%2}, queue queue-{n%3}, schedule scd_5 when n%5==0, response status
[500, 502, 404, 503][n%4], caller 10.0.0.{n%5}, label label-{n%2}) and checks what is left.

env: DLQ_BASE_URL, DLQ_TOKEN, DLQ_IDS (JSON array of the seeded ids, event order)
"""
import json
import os
import time

from qstash import QStash
from qstash.errors import QStashError

client = QStash(os.environ["DLQ_TOKEN"], base_url=os.environ["DLQ_BASE_URL"], retry=False)
ids = json.loads(os.environ["DLQ_IDS"])

page = client.dlq.list()
assert len(page.messages) == len(ids), page
assert page.cursor is None
assert {m.dlq_id for m in page.messages} == set(ids)
m = page.messages[0]
assert m.url.startswith("https://") and m.method == "POST" and m.response_status in (500, 502, 404, 503), m

seen, cursor, pages = [], None, 0
while True:
    page = client.dlq.list(cursor=cursor, count=3, filter={"label": "label-1"})
    seen += [m.dlq_id for m in page.messages]
    pages += 1
    cursor = page.cursor
    if cursor is None:
        break
assert sorted(seen) == sorted(ids[1::2]), seen
assert pages == -(-len(ids[1::2]) // 3), pages

def listed(flt):
    out, cursor = [], None
    while True:
        page = client.dlq.list(cursor=cursor, count=2, filter=flt)
        out += [m.dlq_id for m in page.messages]
        cursor = page.cursor
        if cursor is None:
            return sorted(out)


def expect(pred):
    return sorted(ids[n] for n in range(len(ids)) if pred(n))


now_ms = int(time.time() * 1000)
for flt, pred in [
    ({"message_id": "msg-3"}, lambda n: n == 3),
    ({"url": "https://app.example.com/api/workflow/1"}, lambda n: n % 4 == 1),
    ({"url_group": "group-1"}, lambda n: n % 2 == 1),
    ({"queue": "queue-2"}, lambda n: n % 3 == 2),
    ({"schedule_id": "scd_5"}, lambda n: n % 5 == 0),
    ({"response_status": 404}, lambda n: n % 4 == 2),
    ({"caller_ip": "10.0.0.1"}, lambda n: n % 5 == 1),
    ({"label": "label-0"}, lambda n: n % 2 == 0),
    ({"from_time": now_ms + 3_600_000}, lambda n: False),
    ({"to_time": now_ms + 3_600_000, "queue": "queue-0", "url_group": "group-0"},
     lambda n: n % 3 == 0 and n % 2 == 0),
]:
    assert listed(flt) == expect(pred), (flt, listed(flt), expect(pred))
m3 = client.dlq.list(filter={"message_id": "msg-3"}).messages[0]
assert (m3.url_group, m3.queue, m3.response_status) == ("group-1", "queue-0", 503), m3

got = client.dlq.get(ids[0])
assert got.dlq_id == ids[0] and got.body is not None

client.dlq.delete(ids[0])
assert client.dlq.delete_many([ids[1], ids[2]]) == 2
try:
    client.dlq.get(ids[0])
    raise AssertionError("a deleted entry is still there")
except QStashError as e:
    assert "was not found" in str(e), e
left = client.dlq.list().messages
assert sorted(m.dlq_id for m in left) == sorted(ids[3:]), left
print(json.dumps({"listed": len(ids), "label1_pages": pages, "deleted": 3, "left": len(left)}))
