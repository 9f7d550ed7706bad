"""The service layer: the job lifecycle (claim, run, heartbeat, record the end, notify)
over the catalog, the engine and the object store. The API and the operator call it;
it never imports them."""
