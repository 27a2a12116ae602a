"""Everything that crosses the module's boundary: provider clients and webhooks,
simulators, inbound module triggers, the outbound event outbox and PMS writeback."""
