"""Text-to-image: prompt sets, Cosmos-Predict2 Text2Image candidates, image critique, best-of-N and the detector export."""
