package engine

// Action is what a load of the config did to one pipeline. Its string is
// what the log, /api/pipelines and `etld status` show.
type Action string

// The actions. Every one must have its case in Action.result: the test
// of this file fails for one that does not.
const (
	// ActionStarted: a new pipeline started.
	ActionStarted Action = "started"
	// ActionReconfigured: the changed stages were swapped in place; the
	// others kept running.
	ActionReconfigured Action = "reconfigured"
	// ActionReplaced: the pipeline was restarted whole with its new
	// config.
	ActionReplaced Action = "replaced"
	// ActionStopped: the pipeline's file is gone; it was stopped.
	ActionStopped Action = "stopped"
	// ActionUnchanged: nothing to do.
	ActionUnchanged Action = "unchanged"
	// ActionFailed: the change could not be applied; the running
	// version, if any, is kept or was started again.
	ActionFailed Action = "failed"
	// ActionInvalid: the pipeline's file has errors; the running version,
	// if any, is kept. Set by the caller, which loads the files: Apply
	// never returns it.
	ActionInvalid Action = "invalid"
)

// Actions returns every action, in the order of their declaration.
func Actions() []Action {
	return []Action{ActionStarted, ActionReconfigured, ActionReplaced, ActionStopped,
		ActionUnchanged, ActionFailed, ActionInvalid}
}

// Result is the outcome of a load, for one pipeline or for all of them;
// its values are those of the result label of etld_config_reloads_total,
// plus unchanged.
type Result string

const (
	ResultSuccess   Result = "success"   // something changed, as asked
	ResultUnchanged Result = "unchanged" // nothing to change
	ResultFailure   Result = "failure"   // something could not be changed
)

// Failed reports whether r is a failure.
func (r Result) Failed() bool { return r == ResultFailure }

// Result is the outcome of a (successful) action: success when it changed
// the pipeline (Changed), unchanged, or failure. An unknown action is a
// failure, so that it shows rather than passes for a success.
func (a Action) Result() Result {
	r, _ := a.result()
	return r
}

// Changed reports whether the action changed what runs.
func (a Action) Changed() bool { return a.Result() == ResultSuccess }

// Valid reports whether a is one of the declared actions.
func (a Action) Valid() bool {
	_, ok := a.result()
	return ok
}

func (a Action) String() string { return string(a) }

// result is the one place that says which action is a success; ok is
// false for an undeclared action.
func (a Action) result() (r Result, ok bool) {
	switch a {
	case ActionStarted, ActionReconfigured, ActionReplaced, ActionStopped:
		return ResultSuccess, true
	case ActionUnchanged:
		return ResultUnchanged, true
	case ActionFailed, ActionInvalid:
		return ResultFailure, true
	default:
		return ResultFailure, false
	}
}

// Result is the outcome of the change: a failure when it has an error,
// else its action's.
func (c Change) Result() Result {
	if c.Err != nil {
		return ResultFailure
	}
	return c.Action.Result()
}

// State is the state of a pipeline, as Status reports it.
type State string

const (
	StateRunning  State = "running"
	StateStopping State = "stopping" // told to stop; draining
	StateFinished State = "finished" // every stage returned, without error
	StateFailed   State = "failed"   // every stage returned; one failed
)

// States returns every state, in the order of their declaration.
func States() []State { return []State{StateRunning, StateStopping, StateFinished, StateFailed} }

func (s State) String() string { return string(s) }

// Ready reports whether a pipeline in state s lets the process be ready:
// running or finished cleanly.
func (s State) Ready() bool {
	switch s {
	case StateRunning, StateFinished:
		return true
	default: // StateStopping, StateFailed, and anything undeclared
		return false
	}
}
