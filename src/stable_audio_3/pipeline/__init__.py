"""Generation: the validated request, schedules, samplers, guidance, editing inputs and the engine."""
