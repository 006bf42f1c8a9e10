"""The official release format: config schema, checkpoint key names, repository layout.

Everything that knows how Stability AI's files are spelled lives here, so the model code can use
its own names and the rest of the package never sees an official key.
"""
