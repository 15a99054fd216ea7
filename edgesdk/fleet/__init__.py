"""Fleet scale on the engines fleets already run.

- `ociref`, `registry`, `oci`: packages as OCI artifacts in a registry (push, pull, digest-verified,
  resumable, basic/token auth, TLS with a private CA).
- `mender`: Mender artifacts and the EdgeSDK update module (install / health check / rollback).
- `broker`: the device-local mosquitto config, bridged to a central broker with persistence.
- `canary`: a new release shadow-run beside the current one on live frames, judged by a task metric.
- `rollout`: a release goes to a canary cohort first and on only when the cohort is healthy.
"""
