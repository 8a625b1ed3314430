"""Teaching the critic: labels, training sets, and post-training of the critic models (Reason SFT and GRPO)."""
