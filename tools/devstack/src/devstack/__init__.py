"""Runs the suite on one host for `make run` and the end-to-end tests.

Private Redis and RabbitMQ on free loopback ports, a real ``daprd`` sidecar per app, and the
apps of ``dapr.yaml`` (the multi-app run file), every port chosen free, everything stopped and
its process group killed on exit, even after a failure.
"""
