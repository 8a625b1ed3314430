"""Controls: the videos that steer Transfer generation (edge, blur, depth, segmentation, or the user's own), their
extraction and versioning per source window, several ControlNets weighted in one loop, and control fidelity."""
