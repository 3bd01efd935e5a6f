"""rlhf_lite: the InstructGPT pipeline from scratch."""
