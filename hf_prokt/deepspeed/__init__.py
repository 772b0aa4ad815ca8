"""DeepSpeed ZeRO with a teacher: the distributed state on hosts without an accelerator (`cpu_state`) and the
teacher's own DeepSpeed engines (`engines`)."""
