"""Planning: which examples go in which batch, in which order, on which rank, from metadata
alone (no audio is decoded here). Planners for a single pass and the endless training stream,
the mixture of partitions (weights, the reference's sampler, per-partition streams), the
planning stages as a resumable state machine, and the deal of a single pass over ranks."""
