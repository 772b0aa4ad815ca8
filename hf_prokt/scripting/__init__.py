"""What the example scripts share, importable by any script built like them (the library itself never imports it):

- `arguments`: the flags the scripts have in common, building the teacher and student, JSON configs;
- `run_folder`: the output-dir and resume steps at the start of a run;
- `data_files`: local CSV / TSV / JSON(L) files read with clear errors;
- `model_checks`: the checkpoints to be loaded, checked from their configs before any weight is loaded;
- `final_evaluation`: the final metrics without evaluating twice;
- `shutdown`: ending a multi-process run cleanly (`end_process`), and a script stopped by SIGTERM (`run_script`).
"""
