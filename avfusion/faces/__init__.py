"""Faces in video: MTCNN detection, following one person or everyone, crops, InceptionResnetV1 embeddings."""
