// Package enroll is the client side of getting an Outpost credential: a
// gateway joining with a join token and renewing its certificate, and an
// admin creating a user's credential. Private keys are made here, on the
// client, and only CSRs are sent; keys and tokens never reach logs or
// errors.
package enroll
