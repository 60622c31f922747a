"""What the tests share: plain classes and functions (the fixtures that wrap them are in the conftest.py files), so
that bench/ and scripts can use them without pytest.

- paths: the repository's folders; ports: free ports of 127.0.0.1; waiting: waiting for a condition;
  components: the real programs a test needs (skip, or fail under RECORDS_TEST_REQUIRE_ALL).
- records: the record under test (its URL, files, blobs, index rows); service: a `tornado-records` process;
  commands: the command's other verbs (check, backup...); nginx: nginx running deploy/nginx.conf; engines:
  PostgreSQL and SeaweedFS servers, and a pool of databases; s3: the objects a service keeps; disk: a small tmpfs.
- Clients and faults: rawhttp, rawsocket, sse, hub, appender, tus, access, races, browser, breaking_proxy,
  chopping_proxy, paced_recorder, docs_shell; event_schema (events against records.yaml); soak (bench/soak.py).
"""
