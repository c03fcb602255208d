"""The one exception type for bad input. Its message is a single line naming the file, video or job.

The CLI prints it without a traceback; anything else is a bug and keeps its traceback.
"""


class InputError(ValueError):
    pass
