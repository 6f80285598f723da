"""Upstash's QStash Python SDK (`qstash` on PyPI), pointed at workflow-dlq: its DLQ API —
list (filtered, paged), get, delete, delete_many. Driven by tests/sdk_compat.rs, which seeds
the DLQ and checks what is left.

env: DLQ_BASE_URL, DLQ_TOKEN, DLQ_IDS (JSON array of the seeded ids, event order)
"""
import json
import os

from qstash import QStash
from qstash.errors import QStashError

client = QStash(os.environ["DLQ_TOKEN"], base_url=os.environ["DLQ_BASE_URL"], retry=False)
ids = json.loads(os.environ["DLQ_IDS"])

page = client.dlq.list()
assert len(page.messages) == len(ids), page
assert page.cursor is None
assert {m.dlq_id for m in page.messages} == set(ids)
m = page.messages[0]
assert m.url.startswith("https://") and m.method == "POST" and m.response_status == 500, m

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
