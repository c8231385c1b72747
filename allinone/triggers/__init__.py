"""triggers: schedules and file watches that invoke a function or a workflow.

Pure cores: :mod:`.schedule` (cron stepping and CronJob policies), :mod:`.debounce`,
:mod:`.files` (classifying changes), :mod:`.sink` (writing hostile results safely),
:mod:`.spec` (the object and its validation). Around them: :mod:`.journal` (delivery
records and the seen-set in etcd) and :mod:`.runner` (one task per trigger).
"""
