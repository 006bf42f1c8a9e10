"""User-facing programs (command lines); they use only the public `stable_audio_3` API."""
