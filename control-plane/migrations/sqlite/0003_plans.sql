-- Plans (SPEC §10): every tenant has one, set by the operator. Existing
-- tenants get '' here, which the control plane reads as the default plan
-- (`--default-plan`) until the operator sets one.
ALTER TABLE tenants ADD COLUMN plan TEXT NOT NULL DEFAULT '';
