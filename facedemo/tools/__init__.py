"""Developer tools: accuracy (evaluate, baseline, dataset), speed (bench, loadtest) and the app launcher for tests."""
