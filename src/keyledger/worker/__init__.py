"""The worker: scheduled sync per connection with budget evaluation after each sync, invoice runs at
period close, webhook delivery. Several workers share the work through job leases (``worker_jobs``),
delivery leases (``FOR UPDATE SKIP LOCKED`` on PostgreSQL) and the sync lease per connection."""
