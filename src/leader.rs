//! Leader election with a Lease (being written).
