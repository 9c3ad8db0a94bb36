"""The handover of open windows from one run of the joiner to the next (``state.store``).

``snapshot`` turns the core's open windows, watermark, dedup memory and table into JSON and back;
``store`` keeps that JSON in the Dapr state store across a restart (parts under daprd's request limit,
a manifest, setting aside what this joiner cannot continue)."""
