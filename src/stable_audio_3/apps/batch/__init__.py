"""`stable-audio batch`: many generations from a file, on one machine or a Ray cluster."""
