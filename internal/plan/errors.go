package plan

import (
	"errors"
	"fmt"
)

// FieldError is a problem with one field of a plan or an inventory.
type FieldError struct {
	// Field is the YAML path of the field ("strategy.stages[1].batch"), or
	// "plan" / "inventory" for the document itself.
	Field string
	// Err says what is wrong; it may wrap a *hookpolicy.DeniedError.
	Err error
	// Line is the 1-based line of the field in the YAML source; 0 when
	// unknown (the spec did not come from YAML, or the key is not unique).
	Line int

	// key is the YAML key to look for when guessing Line, when it is not
	// the field's last key (an unknown field names its parent).
	key string
}

func (e *FieldError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s: %v (line %d)", e.Field, e.Err, e.Line)
	}
	return fmt.Sprintf("%s: %v", e.Field, e.Err)
}

func (e *FieldError) Unwrap() error { return e.Err }

// FieldErrors returns every *FieldError in err (as joined by Validate), for
// callers that report field violations one by one.
func FieldErrors(err error) []*FieldError {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []*FieldError
		for _, e := range j.Unwrap() {
			out = append(out, FieldErrors(e)...)
		}
		return out
	}
	var fe *FieldError
	if errors.As(err, &fe) {
		return []*FieldError{fe}
	}
	return nil
}

// maxProblems bounds the problems an error lists: a file of 30,000
// unknown keys gets the first of them and a count of the rest, not a
// message of megabytes that takes minutes to annotate with lines.
const maxProblems = 100

// problems collects field errors in the order they are found.
type problems struct {
	errs []error
	// doc names the document in the summary of problems past maxProblems;
	// "" means "plan".
	doc string
}

func (p *problems) add(field string, format string, args ...any) {
	p.errs = append(p.errs, &FieldError{Field: field, Err: fmt.Errorf(format, args...)})
}

func (p *problems) addErr(err error) {
	if err == nil {
		return
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		p.errs = append(p.errs, j.Unwrap()...)
		return
	}
	p.errs = append(p.errs, err)
}

func (p *problems) err() error {
	if len(p.errs) <= maxProblems {
		return errors.Join(p.errs...)
	}
	doc := p.doc
	if doc == "" {
		doc = "plan"
	}
	more := &FieldError{Field: doc, Err: fmt.Errorf("%d more problems not listed", len(p.errs)-maxProblems)}
	return errors.Join(append(p.errs[:maxProblems:maxProblems], more)...)
}

// join builds a field path: join("strategy", "batch") = "strategy.batch".
func join(parent, child string) string {
	if parent == "" {
		return child
	}
	return parent + "." + child
}

func index(parent string, i int) string {
	return fmt.Sprintf("%s[%d]", parent, i)
}
